import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // test/package/ installs the packed tarball: npm run test:package (vitest.package.config.mts).
    exclude: [...configDefaults.exclude, 'test/package/**'],
    // Tests drive real child processes; keep room for a loaded 2-core CI machine.
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
