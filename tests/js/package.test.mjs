// package.test.mjs - clients/js as a package: its package.json names files
// that exist, its version is the server's (VERSION), and its entry point
// loads as an ES module exporting what wsfan.d.ts declares.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { REPO } from './server.mjs';

const DIR = path.join(REPO, 'clients', 'js');
const pkg = JSON.parse(readFileSync(path.join(DIR, 'package.json'), 'utf8'));

test('the package names existing files and the server\'s version', () => {
  assert.equal(pkg.version, readFileSync(path.join(REPO, 'VERSION'), 'utf8').trim());
  assert.equal(pkg.type, 'module');
  for (const f of [...pkg.files, pkg.exports['.'].default, pkg.exports['.'].types]) {
    assert.ok(existsSync(path.join(DIR, f)), `${f} is in clients/js`);
  }
  assert.match(readFileSync(path.join(DIR, 'CHANGELOG.md'), 'utf8'), new RegExp(`^## ${pkg.version}$`, 'm'));
});

test('the entry point exports what the types declare', async () => {
  const mod = await import(pathToFileURL(path.join(DIR, pkg.exports['.'].default)));
  const types = readFileSync(path.join(DIR, pkg.exports['.'].types), 'utf8');
  for (const name of ['WsfanClient', 'WsfanError', 'connect', 'backoffDelay']) {
    assert.ok(name in mod, `${name} is exported`);
    assert.match(types, new RegExp(`export (class|function) ${name}\\b`), `${name} is declared`);
  }
});
