/** The benchmark's records, as the agent writes them, and where each Kafka message of the backlog goes. */
import { Field, type LogRecord } from '../shared/record.js';
import { logRecord } from '../test/helpers/aggregator.js';
import { BASE_TIME_MS, PARTITIONS, PER_MESSAGE, SPAN_MS, TOPICS } from './aggregator-settings.js';

// ---- the records ----------------------------------------------------------------------------------

/** A record as the agent writes it, with a realistic event_id and an access-log message. */
export function benchRecord(n: number, total: number): string {
  const topic = Math.floor(n / PER_MESSAGE) % TOPICS;
  const pod = `api-${n % 12}`;
  const record: LogRecord = logRecord(n, namespaceOf(topic), BASE_TIME_MS + Math.floor((n * SPAN_MS) / total), { pod });
  record[Field.MESSAGE] = `10.0.${n % 256}.${n % 199} "GET /api/v1/orders?id=${n} HTTP/1.1" 200 ${512 + (n % 4096)} rt=0.0${n % 97}`;
  // One file per pod (12 origins per partition for replay detection), byte offsets growing with n.
  record[Field.EVENT_ID] = `9f86d081884c7d659a${(n % 12).toString(16).padStart(2, '0')}${n.toString(16).padStart(12, '0')}`;
  return JSON.stringify(record);
}

export function namespaceOf(topic: number): string {
  return `bench-ns-${topic}`;
}

/** Message `m` holds records `[m·256, m·256+256)`; it goes to topic `m mod 5`, partitions round-robin. */
export function messagePlacement(m: number): { topic: number; partition: number } {
  return { topic: m % TOPICS, partition: Math.floor(m / TOPICS) % PARTITIONS };
}

export function messageCount(records: number): number {
  return Math.ceil(records / PER_MESSAGE);
}

export function messageRecords(m: number, total: number): number {
  return Math.min(PER_MESSAGE, total - m * PER_MESSAGE);
}

export function messageValue(m: number, total: number): Buffer {
  const lines: string[] = [];
  for (let n = m * PER_MESSAGE; n < m * PER_MESSAGE + messageRecords(m, total); n++) lines.push(`${benchRecord(n, total)}\n`);
  return Buffer.from(lines.join(''));
}

/** Per topic-partition (`t/p`), the message numbers in offset order (messages are produced in order, one request at a time). */
export function partitionMessages(topicNames: readonly string[], total: number): Map<string, number[]> {
  const byPartition = new Map<string, number[]>();
  for (let m = 0; m < messageCount(total); m++) {
    const { topic, partition } = messagePlacement(m);
    const key = `${topicNames[topic] ?? ''}/${partition}`;
    let list = byPartition.get(key);
    if (list === undefined) byPartition.set(key, (list = []));
    list.push(m);
  }
  return byPartition;
}
