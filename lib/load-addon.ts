// The native addon, as node-gyp-build finds it: build/Release (built at install) or the prebuild
// for this system. When none loads, an error that says why and what to do, with node-gyp-build's
// (nothing found) or dlopen's (found, did not load) own error as its cause.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import load from 'node-gyp-build';
import { fdpassError, type FdpassError } from './errors';

const BUILD_ADVICE =
  'To build it from source, install Python 3, make and a C++ compiler (Debian, Ubuntu: apt-get install python3 make g++; ' +
  "Alpine: apk add python3 make g++), then run 'npm rebuild fdpass --build-from-source'. " +
  "If install scripts were blocked (npm's --ignore-scripts or allowScripts, pnpm's defaults), allow fdpass's: they build it at install.";

export function loadAddon(root: string): unknown {
  try {
    return load(root);
  } catch (cause) {
    throw addonLoadError(root, cause);
  }
}

function addonLoadError(root: string, cause: unknown): FdpassError {
  const reason = (cause instanceof Error ? cause.message : String(cause)).split('\n')[0]!;
  // node-gyp-build's words when neither build/ nor prebuilds/ has a match.
  const why = reason.startsWith('No native build was found')
    ? `no prebuilt addon for ${process.platform}-${process.arch}${libcName()} in this package (${shippedPrebuilds(root)}), and none was built at install`
    : `its native addon did not load (${reason})${isLinuxPrebuild(reason) ? '; the Linux prebuilds need glibc 2.33 or later' : ''}`;
  return fdpassError('ERR_FDPASS_ADDON_NOT_LOADED', `fdpass: ${why}. ${BUILD_ADVICE}`, cause);
}

/** Whether dlopen's message names one of prebuilds/linux-*. */
function isLinuxPrebuild(reason: string): boolean {
  return reason.includes(`${path.sep}prebuilds${path.sep}linux-`);
}

/** ' (glibc)' or ' (musl)' on Linux, where a prebuild is for one of them. */
function libcName(): string {
  if (process.platform !== 'linux') return '';
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  return header?.glibcVersionRuntime === undefined ? ' (musl)' : ' (glibc)';
}

/** 'prebuilds for linux-arm64 (glibc), ...', from the file names (prebuildify's tags). */
function shippedPrebuilds(root: string): string {
  const shipped = readDirectory(path.join(root, 'prebuilds')).flatMap((target) =>
    readDirectory(path.join(root, 'prebuilds', target))
      .filter((file) => file.endsWith('.node'))
      .map((file) => {
        const libc = /\.(glibc|musl)\./.exec(file)?.[1];
        return libc === undefined ? target : `${target} (${libc})`;
      }),
  );
  return shipped.length === 0 ? 'it has no prebuilds' : `it has prebuilds for ${shipped.join(', ')}`;
}

function readDirectory(directory: string): string[] {
  try {
    return readdirSync(directory).sort();
  } catch {
    return [];
  }
}
