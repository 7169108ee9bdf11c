// When the addon cannot load (no prebuild for this system and none built, or a prebuild the
// system cannot run), require and import of fdpass fail with an error that says why and what
// to do, node-gyp-build's or dlopen's own error as its cause. Each case loads, by name, a copy
// of the built package (dist/, no build/) installed with its runtime dependencies in a
// temporary project, in a process of its own.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { root } from './helpers.js';

const project = mkdtempSync(path.join(tmpdir(), 'fdpass-no-addon-'));
afterAll(() => rmSync(project, { recursive: true, force: true }));
const installed = path.join(project, 'node_modules', 'fdpass');
for (const part of ['package.json', 'dist']) cpSync(path.join(root, part), path.join(installed, part), { recursive: true });
for (const dependency of ['eventemitter3', 'node-gyp-build']) {
  cpSync(path.join(root, 'node_modules', dependency), path.join(project, 'node_modules', dependency), { recursive: true });
}

// Where the suite itself loads another addon (FDPASS_PREBUILD under npm run test:asan, or
// PREBUILDS_ONLY), the copy must not follow it.
const env = { ...process.env };
delete env.FDPASS_PREBUILD;
delete env.PREBUILDS_ONLY;

function runInProject(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, args, { cwd: project, env, encoding: 'utf8', timeout: 20_000 });
}

interface LoadFailure {
  code?: string;
  message: string;
  cause?: { code?: string; message: string };
}

/** How require('fdpass') fails, in a fresh process. */
function requireFailure(): LoadFailure {
  const script = `try { require('fdpass'); console.log('null') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, cause: e.cause && { code: e.cause.code, message: e.cause.message } })) }`;
  const child = runInProject(['-e', script]);
  expect({ status: child.status, stderr: child.stderr }).toEqual({ status: 0, stderr: '' });
  const failure = JSON.parse(child.stdout) as LoadFailure | null;
  expect(failure, "require('fdpass') without its addon succeeded").not.toBeNull();
  return failure!;
}

/**
 * What import 'fdpass' prints as it fails, in a fresh process: the error as Node shows it
 * uncaught (an import() that catches it does not help: Node 20 still ends the process when a
 * CommonJS module imported from ESM throws).
 */
function importFailure(): string {
  const child = runInProject(['--input-type=module', '-e', "import 'fdpass';"]);
  expect(child.status).toBe(1);
  return child.stderr;
}

/** What every such error tells the user to do. */
function expectAdvice(message: string): void {
  expect(message).toContain('npm rebuild fdpass --build-from-source');
  expect(message).toContain('g++');
  expect(message).toContain('install scripts');
}

const prebuilds = path.join(installed, 'prebuilds', `${process.platform}-${process.arch}`);
const prebuild = path.join(prebuilds, 'fdpass.napi.node');

describe('without an addon it can load, fdpass fails to load with an error that says why and what to do', () => {
  it("when there is no prebuild for this system and none was built: node-gyp-build's error is its cause", () => {
    rmSync(path.join(installed, 'prebuilds'), { recursive: true, force: true });
    const failure = requireFailure();
    expect(failure.code).toBe('ERR_FDPASS_ADDON_NOT_LOADED');
    expectAdvice(failure.message);
    expect(failure.message).toContain(`no prebuilt addon for ${process.platform}-${process.arch}`);
    expect(failure.cause?.message).toMatch(/^No native build was found for platform=/);

    const printed = importFailure();
    expect(printed).toContain("code: 'ERR_FDPASS_ADDON_NOT_LOADED'");
    expectAdvice(printed);
    expect(printed).toContain('[cause]: Error: No native build was found for platform=');
  });

  it("when the prebuild for this system does not load: it names the file and why, dlopen's error as its cause", () => {
    mkdirSync(prebuilds, { recursive: true });
    writeFileSync(prebuild, Buffer.alloc(4096, 'not a shared object '));
    const failure = requireFailure();
    expect(failure.code).toBe('ERR_FDPASS_ADDON_NOT_LOADED');
    expectAdvice(failure.message);
    expect(failure.message).toContain(`${prebuild}: invalid ELF header`);
    expect(failure.cause).toEqual({ code: 'ERR_DLOPEN_FAILED', message: `${prebuild}: invalid ELF header` });

    const printed = importFailure();
    expect(printed).toContain("code: 'ERR_FDPASS_ADDON_NOT_LOADED'");
    expectAdvice(printed);
    expect(printed).toContain(`[cause]: Error: ${prebuild}: invalid ELF header`);
  });
});
