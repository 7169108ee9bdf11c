import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Tests drive real child processes; keep room for a loaded 2-core CI machine.
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
