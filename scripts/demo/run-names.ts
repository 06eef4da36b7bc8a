/** The names of one demo run: every topic, group, prefix, index and folder it creates carries its id. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PodPlan } from './workload.js';

export interface RunNames {
  id: string;
  cluster: string;
  nodeName: string;
  namespaces: Record<PodPlan['namespace'], string>;
  topics: string[];
  topicPattern: string;
  deadLetterTopic: string;
  groupId: string;
  counterGroupId: string;
  s3Prefix: string;
  indexPrefix: string;
  dir: string;
}

export function runNames(): RunNames {
  const tag = `${Date.now().toString(36)}-${randomBytes(2).toString('hex')}`;
  const id = `demo-${tag}`;
  const namespaces = { shop: `shop-${tag}`, payments: `payments-${tag}` };
  // The agent's topic template is `demo.{cluster}.{namespace}`; the cluster is the run id.
  const topicPrefix = `demo.${id}.`;
  return {
    id,
    cluster: id,
    nodeName: `node-${tag}`,
    namespaces,
    topics: Object.values(namespaces).map((ns) => `${topicPrefix}${ns}`),
    topicPattern: `^${topicPrefix.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')}`,
    // Outside the topic pattern, or the aggregators would consume their own dead letters.
    deadLetterTopic: `${id}.deadletter`,
    groupId: `${id}-aggregators`,
    counterGroupId: `${id}-counter`,
    s3Prefix: id,
    indexPrefix: id,
    dir: mkdtempSync(join(tmpdir(), `logship-${id}-`)),
  };
}
