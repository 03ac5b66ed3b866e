import { execFileSync } from 'node:child_process';
import { constants, openSync } from 'node:fs';
import { Socket } from 'node:net';

/**
 * Makes a FIFO and reads it the way containerd's fifo package does (opened read-write, so a daemon
 * restart is no end of file). `got.text` keeps at most `keepChars` characters; `got.bytes` counts all.
 */
export function fifoReader(fifo: string, keepChars = 1_000_000) {
  execFileSync('mkfifo', [fifo]);
  const socket = new Socket({ fd: openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK), readable: true, writable: false });
  const got = { text: '', bytes: 0 };
  socket.on('data', (chunk: Buffer) => {
    got.bytes += chunk.length;
    if (got.text.length < keepChars) got.text += chunk.toString();
  });
  return { got, close: () => socket.destroy() };
}
