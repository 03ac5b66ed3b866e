import { defineConfig } from 'vitest/config';

// Unit specs sit beside their code (*.unit.spec.ts); integration specs live in test/ and use real
// runc, SQLite files and unix sockets, so files run one at a time on these 2-core machines.
export default defineConfig({
  test: {
    include: ['src/**/*.spec.ts', 'machines/**/*.spec.ts', 'test/**/*.spec.ts'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Test images are built once before any spec (test/globalSetup.ts).
    globalSetup: ['test/globalSetup.ts'],
  },
});
