import type { EventStore } from '../core/store.js';

/** Passes every EventStore call to `inner`; a decorator extends it and overrides only what it changes. */
export class PassThroughEventStore implements EventStore {
  constructor(protected readonly inner: EventStore) {}

  appendToStream(...args: Parameters<EventStore['appendToStream']>) { return this.inner.appendToStream(...args); }
  readStream(...args: Parameters<EventStore['readStream']>) { return this.inner.readStream(...args); }
  readAll(...args: Parameters<EventStore['readAll']>) { return this.inner.readAll(...args); }
  headSequence() { return this.inner.headSequence(); }
  listStreams(prefix: string) { return this.inner.listStreams(prefix); }
  saveSnapshot(...args: Parameters<EventStore['saveSnapshot']>) { this.inner.saveSnapshot(...args); }
  loadSnapshot(streamId: string) { return this.inner.loadSnapshot(streamId); }
  verifyChain(...args: Parameters<EventStore['verifyChain']>) { return this.inner.verifyChain(...args); }
  getSandbox(id: string) { return this.inner.getSandbox(id); }
  listSandboxes() { return this.inner.listSandboxes(); }
  getContainer(id: string) { return this.inner.getContainer(id); }
  listContainers(sandboxId?: string) { return this.inner.listContainers(sandboxId); }
  onAppended(...args: Parameters<EventStore['onAppended']>) { return this.inner.onAppended(...args); }
  prune(...args: Parameters<EventStore['prune']>) { this.inner.prune(...args); }
  listPrunes() { return this.inner.listPrunes(); }
  findArchivedPod(ref: string) { return this.inner.findArchivedPod(ref); }
  appendCheckpoint(...args: Parameters<EventStore['appendCheckpoint']>) { this.inner.appendCheckpoint(...args); }
  listCheckpoints() { return this.inner.listCheckpoints(); }
  close() { this.inner.close(); }
}
