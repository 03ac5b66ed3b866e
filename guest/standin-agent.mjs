// Stand-in for the guest agent (the real one lives in guest/agent/): just enough to prove the host↔guest
// channel both ways. scripts/build-guest.sh installs it as /kts/agent/main.mjs when KTS_GUEST_AGENT_DIR
// is unset; guest/init runs it with KTS_AGENT_PORT=/dev/vportNpM (the virtio-serial port named kts.agent).
// Protocol: one UTF-8 line in, one line out.
//   cat <path>   → `cat <JSON string of the file>` for a regular file under /run/kts/share, else `error <why>`
//   anything else → `echo <line>`
// Host disconnects are normal (the daemon restarts): while no host is connected to the chardev socket a
// read of the port returns 0 bytes at once, so the agent sleeps briefly and reads again; a host that
// connects later is served on the same open port. Only errors make it reopen the port.
import { open, readFile, realpath } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';

const SHARE_DIR = '/run/kts/share';
const DISCONNECTED_POLL_MS = 100;
const MAX_LINE_BYTES = 64 * 1024;

const portPath = process.env.KTS_AGENT_PORT;
if (!portPath) {
  console.error('standin-agent: KTS_AGENT_PORT is not set');
  process.exit(2);
}

async function answer(line) {
  if (!line.startsWith('cat ')) return `echo ${line}`;
  try {
    const file = await realpath(line.slice(4));
    if (!file.startsWith(`${SHARE_DIR}/`)) return `error ${file} is outside ${SHARE_DIR}`;
    return `cat ${JSON.stringify(await readFile(file, 'utf8'))}`;
  } catch (error) {
    return `error ${error.code ?? error.message}`;
  }
}

/** Serves lines until the port fails; returns the error. EOF (no host) is waited out, not returned. */
async function serve(port) {
  const buffer = Buffer.alloc(MAX_LINE_BYTES);
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let hostConnected; // unknown until the first read
  for (;;) {
    const { bytesRead } = await port.read(buffer, 0, buffer.length, null);
    if (bytesRead === 0) {
      if (hostConnected !== false) console.log('standin-agent: host disconnected; waiting for it');
      hostConnected = false;
      pending = '';
      decoder.end(); // drop a partial character of the old connection
      await sleep(DISCONNECTED_POLL_MS);
      continue;
    }
    if (hostConnected !== true) console.log('standin-agent: host connected');
    hostConnected = true;
    pending += decoder.write(buffer.subarray(0, bytesRead));
    for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      await port.write(`${await answer(line)}\n`);
    }
    if (Buffer.byteLength(pending) > MAX_LINE_BYTES) {
      pending = '';
      await port.write(`error line longer than ${MAX_LINE_BYTES} bytes\n`);
    }
  }
}

for (;;) {
  let port;
  try {
    // One open for both directions: virtio_console lets only one opener hold a port.
    port = await open(portPath, 'r+');
    console.log(`standin-agent: serving ${portPath}`);
    await serve(port);
  } catch (error) {
    console.error(`standin-agent: ${portPath}: ${error.message}; reopening`);
  } finally {
    await port?.close().catch(() => {});
  }
  await sleep(DISCONNECTED_POLL_MS);
}
