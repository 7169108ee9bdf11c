// node-gyp-build ships no types: it returns the addon's exports for a package root.
declare module 'node-gyp-build' {
  function load(root: string): unknown;
  export = load;
}
