/**
 * The consumer group's partition assignment: every topic-partition of every subscribed topic, spread
 * over the members so that their shares differ by at most one partition (when they subscribe to the
 * same topics). A per-topic assignor puts partition 0 of every topic on the same member; with many
 * one-partition topics (one per namespace) that member gets everything and lags — the skew that made
 * Logstash `topics_pattern` deployments fall behind. Here the whole set is dealt out as one deck.
 */
import kafkajs, { type PartitionAssigner } from 'kafkajs';

const { AssignerProtocol } = kafkajs;

export const BALANCED_ASSIGNER_NAME = 'LogshipBalanced';

export interface GroupMember {
  readonly memberId: string;
  /** The topics this member subscribed to; it only gets partitions of these. */
  readonly topics: readonly string[];
}

/** memberId → topic → partitions. Every member appears, possibly with nothing. */
export type Assignment = Map<string, Record<string, number[]>>;

/**
 * Deals topic-partitions (sorted by topic, then partition) one at a time to the subscribed member
 * holding the fewest so far, ties broken round-robin in member-id order. Deterministic for a given
 * input, so every leader computes the same plan.
 */
export function balancedAssignment(members: readonly GroupMember[], partitionsByTopic: ReadonlyMap<string, readonly number[]>): Assignment {
  const sorted = [...members].sort((a, b) => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0));
  const assignment: Assignment = new Map(sorted.map((m) => [m.memberId, {}]));
  const counts = new Map(sorted.map((m) => [m.memberId, 0]));
  const subscribed = sorted.map((m) => new Set(m.topics));
  let cursor = 0;
  const topics = [...partitionsByTopic.keys()].sort();
  for (const topic of topics) {
    const partitions = [...(partitionsByTopic.get(topic) ?? [])].sort((a, b) => a - b);
    for (const partition of partitions) {
      let chosen = -1;
      for (let step = 0; step < sorted.length; step++) {
        const i = (cursor + step) % sorted.length;
        if (!subscribed[i]?.has(topic)) continue;
        const member = sorted[i];
        const best = chosen === -1 ? undefined : sorted[chosen];
        if (member && (best === undefined || (counts.get(member.memberId) ?? 0) < (counts.get(best.memberId) ?? 0))) chosen = i;
      }
      const member = chosen === -1 ? undefined : sorted[chosen];
      if (!member) continue; // nobody subscribes to this topic
      const own = assignment.get(member.memberId) ?? {};
      (own[topic] ??= []).push(partition);
      counts.set(member.memberId, (counts.get(member.memberId) ?? 0) + 1);
      cursor = (chosen + 1) % sorted.length;
    }
  }
  return assignment;
}

/** The kafkajs assigner wrapping {@link balancedAssignment}. */
export const BalancedAssigner: PartitionAssigner = ({ cluster }) => ({
  name: BALANCED_ASSIGNER_NAME,
  version: 1,
  assign({ members, topics }) {
    const groupMembers = members.map((m) => {
      const metadata = AssignerProtocol.MemberMetadata.decode(m.memberMetadata);
      return { memberId: m.memberId, topics: metadata?.topics ?? topics };
    });
    const wanted = new Set(groupMembers.flatMap((m) => m.topics));
    const partitionsByTopic = new Map<string, number[]>();
    for (const topic of wanted) {
      // A topic the leader has no metadata for yet gets no partitions this round; members re-subscribe
      // when they see new topics, which rebalances again.
      partitionsByTopic.set(topic, cluster.findTopicPartitionMetadata(topic).map((p) => p.partitionId));
    }
    const plan = balancedAssignment(groupMembers, partitionsByTopic);
    return Promise.resolve(
      [...plan].map(([memberId, assignment]) => ({
        memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 1, assignment, userData: Buffer.alloc(0) }),
      })),
    );
  },
  protocol({ topics }) {
    return { name: BALANCED_ASSIGNER_NAME, metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData: Buffer.alloc(0) }) };
  },
});
