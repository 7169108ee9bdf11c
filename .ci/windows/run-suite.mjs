// The Windows suite's runner, on the Linux side: each test/windows/*.test.mjs in a real
// node.exe under Wine, once per pinned Node version, one file at a time. node.exe writes its
// TAP report to a file (under Wine a piped stdout makes node.exe fail with EBADF); the runner
// reads it, counts the top-level tests, prints the failures' reports and one closing line.
// A test that Wine cannot show is a node:test `todo` when the test detects Wine at run time:
// a failing one counts as an expected failure, with its reason.
// Usage: node .ci/windows/run-suite.mjs [name filter]   (via .ci/windows/test)
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '../..');
const { WINE, FDPASS_WINDOWS_CACHE, NODE_WINDOWS_VERSIONS } = process.env;
if (!WINE || !FDPASS_WINDOWS_CACHE || !NODE_WINDOWS_VERSIONS) throw new Error('run through .ci/windows/test (it sets the environment)');
const FILE_TIMEOUT_MS = 120_000;
const filter = process.argv[2] ?? '';
const testDir = path.join(root, 'test', 'windows');
const files = readdirSync(testDir)
  .filter((name) => name.endsWith('.test.mjs') && name.includes(filter))
  .sort();
const scratch = mkdtempSync(path.join(tmpdir(), 'fdpass-windows-'));

/** A Linux path as Wine's Windows processes see it (drive Z: is /). */
const windowsPath = (unixPath) => `Z:${unixPath.replaceAll('/', '\\')}`;

function runFile(nodeExe, file, reportPath) {
  const out = openSync(reportPath, 'w');
  const child = spawn(WINE, [nodeExe, '--test-reporter=tap', windowsPath(path.join(testDir, file))], {
    cwd: root,
    stdio: ['ignore', out, out],
    // PREBUILDS_ONLY: node-gyp-build takes prebuilds/win32-x64, not build/'s Linux addon.
    env: { ...process.env, PREBUILDS_ONLY: '1', FDPASS_WINDOWS_SCRATCH: windowsPath(scratch) },
  });
  closeSync(out);
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), FILE_TIMEOUT_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, report: readFileSync(reportPath, 'utf8') });
    });
  });
}

// Top-level results of a node:test TAP report: `ok 3 - name` or `not ok 3 - name # TODO why`.
function parseReport(report) {
  const results = [];
  for (const line of report.split('\n')) {
    const match = /^(not )?ok \d+ - (.*?)(?: # (TODO|SKIP)\b ?(.*))?$/.exec(line);
    if (match) results.push({ ok: !match[1], name: match[2], directive: match[3], reason: match[4] ?? '' });
  }
  return results;
}

const started = Date.now();
const counts = { passed: 0, failed: 0, expected: 0, skipped: 0 };
const expectedFailures = [];
const failures = [];
for (const version of NODE_WINDOWS_VERSIONS.split(/\s+/).filter(Boolean)) {
  const nodeExe = path.join(FDPASS_WINDOWS_CACHE, `node-${version}`, 'bin', 'node.exe');
  for (const file of files) {
    const fileStarted = Date.now();
    const reportPath = path.join(scratch, `${version}-${file}.tap`);
    let { code, signal, report } = await runFile(nodeExe, file, reportPath);
    // A node.exe that failed and wrote nothing at all never ran a test: Wine did not start it
    // (seen once, exit code 1 at once). Once more, said in the log; a second time counts.
    if (code !== 0 && report.trim() === '') {
      console.log(`retry Node ${version} ${file}: node.exe ended with ${signal ?? `exit code ${code}`} and wrote nothing`);
      ({ code, signal, report } = await runFile(nodeExe, file, reportPath));
    }
    const results = parseReport(report);
    let fileFailed = 0;
    for (const result of results) {
      if (result.directive === 'SKIP') counts.skipped++;
      else if (result.directive === 'TODO' && !result.ok) {
        counts.expected++;
        expectedFailures.push(`Node ${version} ${file}: ${result.name} (${result.reason})`);
      } else if (result.ok && result.directive !== 'TODO') counts.passed++;
      else {
        // A failure, or a test expected to fail under Wine that passed: either way, look.
        fileFailed++;
        failures.push(`Node ${version} ${file}: ${result.name}${result.ok ? ' (expected to fail under Wine, but passed)' : ''}`);
      }
    }
    if (code !== 0 && fileFailed === 0) {
      fileFailed++;
      failures.push(`Node ${version} ${file}: node.exe ended with ${signal ?? `exit code ${code}`}${signal ? ' (timed out?)' : ''}`);
    }
    counts.failed += fileFailed;
    const seconds = ((Date.now() - fileStarted) / 1000).toFixed(1);
    console.log(`${fileFailed ? 'FAIL' : 'ok  '} Node ${version} ${file} (${results.length} tests, ${seconds} s)`);
    if (fileFailed) console.log(report.replace(/^/gm, '    | '));
  }
}
rmSync(scratch, { recursive: true, force: true });

for (const line of expectedFailures) console.log(`expected failure under Wine: ${line}`);
for (const line of failures) console.log(`FAILED: ${line}`);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(
  `windows suite (Windows API behaviour under Wine, Node ${NODE_WINDOWS_VERSIONS.trim().split(/\s+/).join(' and ')}): ` +
    `${counts.passed} passed, ${counts.failed} failed, ${counts.expected} expected failures` +
    `${counts.skipped ? `, ${counts.skipped} skipped` : ''} in ${seconds} s`,
);
process.exitCode = counts.failed > 0 || counts.passed === 0 ? 1 : 0;
