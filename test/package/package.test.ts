// npm run test:package: the package as users get it, not as the checkout has it. `npm pack`
// makes the tarball; empty projects install it (with no compiler on PATH, and separately with
// install scripts blocked); fixtures copied into each project load fdpass from its
// node_modules, by require() and by import, and pass an fd between two processes; a small
// TypeScript user is type-checked against the shipped declarations.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportNames } from '../export-names.js';
import { expectNoFdLeakAroundEachTest, fixtures, root } from '../helpers.js';

const here = path.join(root, 'test', 'package');
const work = mkdtempSync(path.join(tmpdir(), 'fdpass-package-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const payload = path.join(work, 'payload.txt');
writeFileSync(payload, 'passed from the tarball');

expectNoFdLeakAroundEachTest();

/**
 * The environment of every command here: npm's own variables from `npm run` dropped (a
 * project's install must not inherit this one's configuration), and no FDPASS_PREBUILD, which
 * would make node-gyp-build load the checkout's addon instead of the installed one.
 */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key) && key !== 'FDPASS_PREBUILD') env[key] = value;
  }
  return { ...env, ...extra };
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: readonly string[], options: SpawnSyncOptions): Ran {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 240_000, maxBuffer: 64 << 20, ...options });
  if (result.error) throw result.error;
  return { code: result.status, stdout: String(result.stdout), stderr: String(result.stderr) };
}

/** What a failed command said, cut to its last lines. */
function tail(ran: Ran): string {
  return `exit ${ran.code}\n${(ran.stdout + ran.stderr).trim().split('\n').slice(-30).join('\n')}`;
}

/**
 * A PATH with node, npm and the basic tools a shell script uses, and no compiler, make or
 * Python: what a slim container image has. Symlinks, so nothing else in their directories
 * comes along.
 */
function pathWithoutCompiler(): string {
  const bin = path.join(work, 'bin-without-compiler');
  mkdirSync(bin);
  const tools = ['sh', 'bash', 'env', 'cat', 'ls', 'mkdir', 'rm', 'cp', 'mv', 'ln', 'chmod', 'uname', 'sed', 'grep', 'tar', 'gzip'];
  const which = (name: string): string | undefined => {
    const found = run('sh', ['-c', `command -v ${name}`], {});
    return found.code === 0 ? found.stdout.trim() : undefined;
  };
  symlinkSync(process.execPath, path.join(bin, 'node'));
  const npm = which('npm');
  if (npm === undefined) throw new Error('npm is not on PATH');
  symlinkSync(npm, path.join(bin, 'npm'));
  for (const tool of tools) {
    const found = which(tool);
    if (found !== undefined) symlinkSync(found, path.join(bin, tool));
  }
  return bin;
}

let tarball = '';
const noCompilerPath = pathWithoutCompiler();

beforeAll(() => {
  // npm pack runs `prepare` (the TypeScript build) first, as a publish would.
  const packed = run('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, env: cleanEnv() });
  expect(packed.code, tail(packed)).toBe(0);
  const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{ filename: string }>;
  tarball = path.join(work, info!.filename);
}, 300_000);

it('the PATH without a compiler has node and npm, and nothing that could build the addon', () => {
  const env = cleanEnv({ PATH: noCompilerPath });
  const found = (tool: string): boolean => run('sh', ['-c', `command -v ${tool}`], { env }).code === 0;
  expect(['node', 'npm'].filter(found)).toEqual(['node', 'npm']);
  expect(['cc', 'gcc', 'g++', 'c++', 'clang', 'make', 'python3', 'python'].filter(found)).toEqual([]);
});

/** An empty project that depends on nothing yet. */
function emptyProject(name: string): string {
  const dir = path.join(work, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true }));
  return dir;
}

/** npm install of packages into dir: cached downloads are used without asking the registry again. */
function npmInstall(dir: string, packages: readonly string[], flags: readonly string[], env: NodeJS.ProcessEnv): Ran {
  return run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...flags, ...packages], { cwd: dir, env });
}

describe.each([
  { how: 'with no compiler on PATH', name: 'no-compiler', flags: [], env: cleanEnv({ PATH: noCompilerPath }) },
  { how: 'with install scripts blocked', name: 'ignore-scripts', flags: ['--ignore-scripts'], env: cleanEnv() },
])('the tarball installed $how', ({ name, flags, env }) => {
  const project = emptyProject(name);
  const installed = path.join(project, 'node_modules', 'fdpass');

  beforeAll(() => {
    for (const file of ['smoke-run.cjs', 'smoke.cjs', 'smoke.mjs'])
      copyFileSync(path.join(here, 'fixtures', file), path.join(project, file));
    copyFileSync(path.join(fixtures, 'lifecycle-module-both.mjs'), path.join(project, 'lifecycle-module-both.mjs'));
  });

  it('installs', () => {
    const ran = npmInstall(project, [tarball], flags, env);
    expect(ran.code, tail(ran)).toBe(0);
    expect(existsSync(path.join(installed, 'package.json'))).toBe(true);
  }, 300_000);

  /** Runs a copied fixture in the project; its one JSON line. */
  function node(args: readonly string[]): unknown {
    const ran = run(process.execPath, args, { cwd: project, env, timeout: 30_000 });
    expect({ code: ran.code, stderr: ran.stderr }, tail(ran)).toEqual({ code: 0, stderr: '' });
    return JSON.parse(ran.stdout) as unknown;
  }

  it.each([
    ["require('fdpass')", 'smoke.cjs', 'index.js'],
    ["import from 'fdpass'", 'smoke.mjs', 'index.mjs'],
  ])('%s passes an open file to a child process, and neither side leaks an fd', (_, fixture, entry) => {
    const result = node([fixture, payload]) as { addon: string };
    expect(result).toEqual({
      loaded: path.join(installed, 'dist', entry),
      addon: expect.any(String),
      code: 0,
      child: { content: 'passed from the tarball', before: expect.any(Number), after: expect.any(Number) },
      parent: { before: expect.any(Number), after: expect.any(Number) },
    });
    // The installed package's own addon: its prebuild, or the build its install made.
    expect([path.join(installed, 'prebuilds'), path.join(installed, 'build')]).toContain(path.dirname(path.dirname(result.addon)));
    const { child, parent } = result as unknown as Record<'child' | 'parent', { before: number; after: number }>;
    expect(child.after).toBe(child.before);
    expect(parent.after).toBe(parent.before);
  });

  it('import and require in one process give the very same Channel class, functions and addon', () => {
    const same = Object.fromEntries(exportNames.map((exported) => [exported, true]));
    expect(node(['lifecycle-module-both.mjs', installed])).toEqual({
      resolved: path.join(installed, 'dist', 'index.js'),
      names: exportNames,
      same,
      instance: true,
      lastError: 'EBADF',
    });
  });
});

describe('what the README points to', () => {
  const project = emptyProject('readme-links');

  beforeAll(() => {
    const ran = npmInstall(project, [tarball], ['--ignore-scripts'], cleanEnv());
    expect(ran.code, tail(ran)).toBe(0);
  }, 300_000);

  it('every file the installed README links to or names under docs/ and examples/ is in the package', () => {
    const installed = path.join(project, 'node_modules', 'fdpass');
    const readme = readFileSync(path.join(installed, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\(([^)#:]+)(?:#[^)]*)?\)/g)].map((match) => match[1]!);
    const named = [...readme.matchAll(/\b(?:docs|examples)\/[\w./-]*\w/g)].map((match) => match[0]);
    // docs/api/ is built by `npm run docs` in a checkout, not shipped.
    const files = [...new Set([...links, ...named])].filter((file) => !file.startsWith('docs/api/')).sort();
    expect(files.length).toBeGreaterThan(10);
    expect(files.filter((file) => !existsSync(path.join(installed, file)))).toEqual([]);
  });
});

describe('a TypeScript user (strict nodenext, no "types" listed, @types/node installed)', () => {
  const project = emptyProject('typescript-user');
  const devDependencies = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> })
    .devDependencies;

  beforeAll(() => {
    for (const file of ['tsconfig.json', 'consumer.mts', 'consumer.cts'])
      copyFileSync(path.join(here, 'consumer', file), path.join(project, file));
    // Types need no addon: install scripts are skipped to save the time.
    const ran = npmInstall(
      project,
      [tarball, `@types/node@${devDependencies['@types/node']}`, 'typescript@latest'],
      ['--ignore-scripts'],
      cleanEnv(),
    );
    expect(ran.code, tail(ran)).toBe(0);
  }, 300_000);

  it.each([
    ['the TypeScript this project builds with', path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')],
    ["the registry's latest TypeScript", path.join(project, 'node_modules', 'typescript', 'bin', 'tsc')],
  ])(
    'type-checks with 0 errors on %s',
    (_, tsc) => {
      const version = run(process.execPath, [tsc, '--version'], { env: cleanEnv() }).stdout.trim();
      const ran = run(process.execPath, [tsc, '-p', project], { cwd: project, env: cleanEnv(), timeout: 120_000 });
      expect(ran.stdout + ran.stderr, `${version}: ${tail(ran)}`).toBe('');
      expect(ran.code, version).toBe(0);
    },
    120_000,
  );
});
