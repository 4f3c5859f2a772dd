// package.test.mjs - clients/js as a package: its package.json names files
// that exist, its version has a CHANGELOG entry, its entry point loads as an
// ES module exporting what wsfan.d.ts declares, and the events the client
// accepts are the ones ClientEvents declares, none of them a DOM event's name.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { REPO } from './server.mjs';

const DIR = path.join(REPO, 'clients', 'js');
const pkg = JSON.parse(readFileSync(path.join(DIR, 'package.json'), 'utf8'));

test('the package names existing files and has a changelog entry for its version', () => {
  assert.match(pkg.version, /^\d+\.\d+\.\d+$/);
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

test('on() takes the events ClientEvents declares, and no DOM event name', async () => {
  const { WsfanClient } = await import(pathToFileURL(path.join(DIR, pkg.exports['.'].default)));
  const types = readFileSync(path.join(DIR, pkg.exports['.'].types), 'utf8');
  const block = types.slice(types.indexOf('export interface ClientEvents {'));
  const declared = [...block.slice(0, block.indexOf('\n}')).matchAll(/^  (\w+): /gm)].map((m) => m[1]);
  assert.ok(declared.length >= 10, `ClientEvents lists the events: ${declared}`);
  const client = new WsfanClient('ws://127.0.0.1:9/ws', { WebSocket: class {} });
  for (const name of declared) client.on(name, () => {})();
  for (const dom of ['open', 'close', 'error', 'message']) {
    assert.ok(!declared.includes(dom), `${dom} is not a client event`);
    assert.throws(() => client.on(dom, () => {}), { name: 'TypeError', message: new RegExp(`no event "${dom}"`) });
  }
  assert.throws(() => client.on('connected'), { name: 'TypeError', message: /needs a function/ });
});
