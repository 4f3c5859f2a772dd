// chromium.mjs - Debian's Chromium (or $CHROMIUM), headless, for the browser
// tests through playwright-core.
import { chromium } from 'playwright-core';

/** A new browser; playwright gives every launch a fresh --user-data-dir of its own.
 * extraArgs: more switches (tls.test.mjs trusts its test certificate with one). */
export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}
