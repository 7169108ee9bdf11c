import { defineConfig } from 'vitest/config';

// npm run test:package: the packed tarball, installed into empty projects (test/package/).
export default defineConfig({
  test: {
    include: ['test/package/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 300_000,
  },
});
