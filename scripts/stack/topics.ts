/**
 * Deletes the topics a test or a benchmark made, so that the stack's Kafka does not pile them up
 * (1,287 agent-benchmark topics had once: every agent started later listed them all). Kafka answers a
 * request for a topic that does not exist with an error for the whole request, so only existing
 * topics are asked for.
 */
import type { Admin } from 'kafkajs';

export interface TopicSelection {
  /** Topics by name. */
  names?: readonly string[];
  /** Every topic whose name starts with this. */
  prefix?: string;
}

/** Deletes the existing topics `selection` names or prefixes; returns the ones deleted. */
export async function deleteTopics(admin: Pick<Admin, 'listTopics' | 'deleteTopics'>, selection: TopicSelection): Promise<string[]> {
  const names = new Set(selection.names ?? []);
  const { prefix } = selection;
  const doomed = (await admin.listTopics()).filter((topic) => names.has(topic) || (prefix !== undefined && topic.startsWith(prefix)));
  if (doomed.length > 0) await admin.deleteTopics({ topics: doomed });
  return doomed;
}
