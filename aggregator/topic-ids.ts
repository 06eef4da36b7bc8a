/**
 * A topic's incarnation: the topic ID Kafka gives a topic when it is created (Kafka 2.8 and later),
 * different for a topic deleted and created again under the same name. Sink state tied to it is not
 * trusted for another incarnation.
 *
 * kafkajs (2.2) speaks Metadata up to version 6, which has no topic IDs, so this module sends one
 * Metadata v10 request itself over a kafkajs broker connection (same brokers, TLS and SASL); it is the
 * only place that reaches into kafkajs internals for it. Against a broker without Metadata v10 the
 * incarnation is unknown (`undefined`), and only the high-watermark check of the state applies.
 */
import type { Kafka } from 'kafkajs';
import Encoder from 'kafkajs/src/protocol/encoder.js';

const METADATA_API_KEY = 3;
const METADATA_VERSION = 10;
const ZERO_UUID = '00000000-0000-0000-0000-000000000000';

interface ProtocolRequest {
  request: { apiKey: number; apiVersion: number; apiName: string; encode: () => Promise<Encoder> };
  response: { decode: (payload: Buffer) => Promise<Buffer>; parse: (payload: Buffer) => Promise<Map<string, string>> };
}

type ApiVersions = Record<number, { maxVersion: number } | undefined>;

interface InternalBroker {
  versions?: ApiVersions;
}

interface InternalCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  brokerPool: { seedBroker?: InternalBroker; versions?: ApiVersions };
}

/** kafkajs no longer has what this module uses (an upgrade): topic IDs are then unknown. */
class InternalsChangedError extends Error {
  constructor(what: string) {
    super(`kafkajs internals changed: ${what} not found`);
    this.name = 'InternalsChangedError';
  }
}

function privateSymbol(target: object, description: string): symbol {
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const found = Object.getOwnPropertySymbols(o).find((s) => s.description === description);
    if (found !== undefined) return found;
  }
  throw new InternalsChangedError(description);
}

export class TopicIds {
  private cluster: InternalCluster | undefined;
  private unsupported = false;
  private connecting: Promise<InternalCluster> | undefined;

  constructor(private readonly kafka: Kafka) {}

  /**
   * The topic IDs of `topics` (absent: unknown topic, a broker older than Kafka 2.8, or a kafkajs whose
   * internals this module no longer finds: then incarnations are unknown rather than every S3 write
   * stalled). Network failures throw (the caller retries).
   */
  async fetch(topics: readonly string[]): Promise<Map<string, string>> {
    if (topics.length === 0 || this.unsupported) return new Map();
    try {
      return await this.fetchIds(topics);
    } catch (error) {
      if (!(error instanceof InternalsChangedError)) throw error;
      this.unsupported = true;
      return new Map();
    }
  }

  private async fetchIds(topics: readonly string[]): Promise<Map<string, string>> {
    const cluster = await this.connect();
    const broker = cluster.brokerPool.seedBroker;
    if (broker === undefined) throw new Error('no broker connection');
    const versions: ApiVersions = cluster.brokerPool.versions ?? broker.versions ?? {};
    const supported = versions[METADATA_API_KEY]?.maxVersion ?? 0;
    if (supported < METADATA_VERSION) return new Map();
    const send = privateSymbol(broker, 'private:Broker:sendRequest');
    const request: ProtocolRequest = {
      request: { apiKey: METADATA_API_KEY, apiVersion: METADATA_VERSION, apiName: 'Metadata', encode: () => Promise.resolve(encodeRequest(topics)) },
      response: { decode: (payload) => Promise.resolve(payload), parse: (payload) => Promise.resolve(parseResponse(payload)) },
    };
    const sender = (broker as Record<symbol, (r: ProtocolRequest) => Promise<Map<string, string>>>)[send];
    if (sender === undefined) throw new InternalsChangedError('sendRequest');
    return sender.call(broker, request);
  }

  async close(): Promise<void> {
    const cluster = this.cluster;
    this.cluster = undefined;
    this.connecting = undefined;
    await cluster?.disconnect();
  }

  private async connect(): Promise<InternalCluster> {
    if (this.cluster !== undefined) return this.cluster;
    this.connecting ??= (async () => {
      const create = privateSymbol(this.kafka, 'private:Kafka:createCluster');
      const factory = (this.kafka as unknown as Record<symbol, (o: object) => InternalCluster>)[create];
      if (factory === undefined) throw new InternalsChangedError('createCluster');
      const cluster = factory.call(this.kafka, { allowAutoTopicCreation: false });
      await cluster.connect();
      this.cluster = cluster;
      return cluster;
    })();
    try {
      return await this.connecting;
    } catch (error) {
      this.connecting = undefined;
      throw error;
    }
  }
}

/** Metadata request v10 (a flexible version): the request header's tagged fields come first. */
export function encodeRequest(topics: readonly string[]): Encoder {
  const parts: Buffer[] = [Buffer.from([0])]; // request header v2: no tagged fields
  parts.push(uvarint(topics.length + 1));
  for (const topic of topics) {
    parts.push(Buffer.alloc(16)); // topic_id: zero, asking by name
    const name = Buffer.from(topic, 'utf8');
    parts.push(uvarint(name.length + 1), name, Buffer.from([0]));
  }
  parts.push(Buffer.from([0, 0, 0, 0])); // allow_auto_topic_creation, include cluster/topic authorized operations, tagged fields
  const encoder = new Encoder();
  encoder.writeBufferInternal(Buffer.concat(parts));
  return encoder;
}

/** Reads topic names and IDs from a Metadata v10 response body (after the correlation id). */
export function parseResponse(payload: Buffer): Map<string, string> {
  const r = new Reader(payload);
  r.tags(); // response header v1
  r.skip(4); // throttle_time_ms
  for (let brokers = r.compactLength(); brokers > 0; brokers--) {
    r.skip(4);
    r.compactString();
    r.skip(4);
    r.compactString();
    r.tags();
  }
  r.compactString(); // cluster_id
  r.skip(4); // controller_id
  const ids = new Map<string, string>();
  for (let topics = r.compactLength(); topics > 0; topics--) {
    const errorCode = r.int16();
    const name = r.compactString();
    const id = r.uuid();
    r.skip(1); // is_internal
    for (let partitions = r.compactLength(); partitions > 0; partitions--) {
      r.skip(2 + 4 + 4 + 4);
      for (let k = 0; k < 3; k++) r.skip(4 * r.compactLength());
      r.tags();
    }
    r.skip(4); // topic_authorized_operations
    r.tags();
    if (errorCode === 0 && name !== undefined && id !== ZERO_UUID) ids.set(name, id);
  }
  return ids;
}

function uvarint(value: number): Buffer {
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80) {
    bytes.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

class Reader {
  private at = 0;
  constructor(private readonly buffer: Buffer) {}

  skip(bytes: number): void {
    this.at += bytes;
    if (this.at > this.buffer.length) throw new Error('Metadata response ended early');
  }

  int16(): number {
    const value = this.buffer.readInt16BE(this.at);
    this.at += 2;
    return value;
  }

  uvarint(): number {
    let value = 0;
    let shift = 0;
    for (;;) {
      const byte = this.buffer[this.at++];
      if (byte === undefined) throw new Error('Metadata response ended early');
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
      shift += 7;
    }
  }

  /** A compact array's length (0 for null). */
  compactLength(): number {
    return Math.max(0, this.uvarint() - 1);
  }

  compactString(): string | undefined {
    const length = this.uvarint();
    if (length === 0) return undefined;
    const value = this.buffer.toString('utf8', this.at, this.at + length - 1);
    this.skip(length - 1);
    return value;
  }

  uuid(): string {
    const hex = this.buffer.toString('hex', this.at, this.at + 16);
    this.skip(16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  tags(): void {
    for (let count = this.uvarint(); count > 0; count--) {
      this.uvarint();
      this.skip(this.uvarint());
    }
  }
}
