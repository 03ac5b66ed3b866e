import { createServer, type Socket } from 'node:net';
import { ServerCredentials, type Server } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { tagConnection, type PeerReader } from '../grpc/caller.js';

export interface GrpcListener {
  /** Stops accepting at once, awaits `drain` (grpc-js's shutdown of the calls in flight), then cuts any connection left. */
  close(drain: () => Promise<void>): Promise<void>;
}

/**
 * Serves `server` on a unix socket the daemon listens on itself. grpc-js's own bindAsync hides each
 * accepted socket, and its getPeer() says 'unknown' for a unix one; so the daemon accepts, reads the
 * peer's credentials from the socket's fd (SO_PEERCRED), puts a token naming them in the socket's
 * `remoteAddress` (which getPeer() returns; caller.ts), and hands the connection to grpc-js through a
 * connection injector, which serves it as if grpc-js had accepted it.
 */
export async function listenWithPeerCredentials(server: Server, socketPath: string, readPeer: PeerReader, logger: Logger): Promise<GrpcListener> {
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  const sockets = new Set<Socket>();
  const listener = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    const peer = readPeer(socket);
    if (!peer) logger.warn('the peer credentials of a connection could not be read; its calls are recorded as uid=?');
    tagConnection(socket, peer);
    injector.injectConnection(socket);
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(socketPath, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  listener.on('error', (error) => logger.error({ err: error }, 'the daemon\'s socket failed'));
  return {
    async close(drain) {
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      await drain();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
