/**
 * The consumer group's partition assignment: every topic-partition of every subscribed topic, spread
 * over the members so that their shares differ by at most one partition (when they subscribe to the
 * same topics). A per-topic assignor puts partition 0 of every topic on the same member; with many
 * one-partition topics (one per namespace) that member gets everything and lags — the skew that made
 * Logstash `topics_pattern` deployments fall behind. Here the whole set is dealt out as one deck.
 *
 * Sticky: each member tells the leader (in its JoinGroup metadata's user data) the partitions it owns
 * and the generation it got them in, and keeps them as far as the balance allows. A new topic, or a
 * member joining, then moves only the partitions it must; a member keeps its batches of the others.
 */
import kafkajs, { type PartitionAssigner } from 'kafkajs';

const { AssignerProtocol } = kafkajs;

export const BALANCED_ASSIGNER_NAME = 'LogshipBalanced';

export interface GroupMember {
  readonly memberId: string;
  /** The topics this member subscribed to; it only gets partitions of these. */
  readonly topics: readonly string[];
  /** What the member owns now (from its last assignment), with the generation it got it in. */
  readonly owned?: OwnedPartitions;
}

export interface OwnedPartitions {
  readonly generation: number;
  readonly partitions: Readonly<Record<string, readonly number[]>>;
}

/** memberId → topic → partitions. Every member appears, possibly with nothing. */
export type Assignment = Map<string, Record<string, number[]>>;

/**
 * Balanced and sticky. With T partitions over M members each member may hold floor(T/M), and
 * T mod M of them one more. First each member keeps what it owns, in that limit (a partition two
 * members claim goes to the later generation, then the first member id); then the rest is dealt one
 * partition at a time (sorted by topic, then partition) to the subscribed member holding the fewest
 * so far, ties broken round-robin in member-id order. Deterministic for a given input, so every
 * leader computes the same plan.
 */
export function balancedAssignment(members: readonly GroupMember[], partitionsByTopic: ReadonlyMap<string, readonly number[]>): Assignment {
  const sorted = [...members].sort((a, b) => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0));
  const assignment: Assignment = new Map(sorted.map((m) => [m.memberId, {}]));
  const counts = sorted.map(() => 0);
  const subscribed = sorted.map((m) => new Set(m.topics));
  const topics = [...partitionsByTopic.keys()].sort();
  const deck: [string, number][] = [];
  for (const topic of topics) for (const partition of [...(partitionsByTopic.get(topic) ?? [])].sort((a, b) => a - b)) deck.push([topic, partition]);
  const give = (i: number, topic: string, partition: number): void => {
    const member = sorted[i];
    if (member === undefined) return;
    const own = assignment.get(member.memberId) ?? {};
    (own[topic] ??= []).push(partition);
    counts[i] = (counts[i] ?? 0) + 1;
  };

  // Claims: partition → the member keeping it (latest generation, then first member id).
  const claimant = new Map<string, number>();
  sorted.forEach((member, i) => {
    const owned = member.owned;
    if (owned === undefined) return;
    for (const [topic, partitions] of Object.entries(owned.partitions)) {
      if (!subscribed[i]?.has(topic)) continue;
      for (const partition of partitions) {
        const key = `${topic}\u0000${String(partition)}`;
        const other = claimant.get(key);
        if (other === undefined || owned.generation > (sorted[other]?.owned?.generation ?? -1)) claimant.set(key, i);
      }
    }
  });
  const base = sorted.length === 0 ? 0 : Math.floor(deck.length / sorted.length);
  let extras = sorted.length === 0 ? 0 : deck.length % sorted.length;
  const claimed: [string, number][][] = sorted.map(() => []);
  for (const [topic, partition] of deck) {
    const i = claimant.get(`${topic}\u0000${String(partition)}`);
    if (i !== undefined) claimed[i]?.push([topic, partition]);
  }
  const taken = new Set<string>();
  claimed.forEach((own, i) => {
    const limit = own.length > base && extras > 0 ? base + 1 : base;
    if (limit > base) extras--;
    for (const [topic, partition] of own.slice(0, limit)) {
      give(i, topic, partition);
      taken.add(`${topic}\u0000${String(partition)}`);
    }
  });

  let cursor = 0;
  for (const [topic, partition] of deck) {
    if (taken.has(`${topic}\u0000${String(partition)}`)) continue;
    let chosen = -1;
    for (let step = 0; step < sorted.length; step++) {
      const i = (cursor + step) % sorted.length;
      if (!subscribed[i]?.has(topic)) continue;
      if (chosen === -1 || (counts[i] ?? 0) < (counts[chosen] ?? 0)) chosen = i;
    }
    if (chosen === -1) continue; // nobody subscribes to this topic
    give(chosen, topic, partition);
    cursor = (chosen + 1) % sorted.length;
  }
  return assignment;
}

/** The member metadata's user data: what it owns. JSON, so that any later version can read it. */
export function encodeOwned(owned: OwnedPartitions | undefined): Buffer {
  return owned === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify({ generation: owned.generation, owned: owned.partitions }));
}

/** Reads {@link encodeOwned}'s user data; anything else (another assigner's, garbage) owns nothing. */
export function decodeOwned(userData: Buffer | null | undefined): OwnedPartitions | undefined {
  if (userData === null || userData === undefined || userData.length === 0) return undefined;
  try {
    const parsed = JSON.parse(userData.toString('utf8')) as { generation?: unknown; owned?: unknown };
    if (typeof parsed.generation !== 'number' || typeof parsed.owned !== 'object' || parsed.owned === null) return undefined;
    const partitions: Record<string, number[]> = {};
    for (const [topic, list] of Object.entries(parsed.owned as Record<string, unknown>)) {
      if (Array.isArray(list)) partitions[topic] = list.filter((p): p is number => Number.isSafeInteger(p));
    }
    return { generation: parsed.generation, partitions };
  } catch {
    return undefined;
  }
}

export interface BalancedAssignerOptions {
  /** What this member owns now, sent to the leader so that it keeps it where it can. */
  readonly owned?: () => OwnedPartitions | undefined;
}

/** The kafkajs assigner wrapping {@link balancedAssignment}. */
export function balancedAssigner(options: BalancedAssignerOptions = {}): PartitionAssigner {
  return ({ cluster }) => ({
    name: BALANCED_ASSIGNER_NAME,
    version: 1,
    async assign({ members, topics }) {
      const groupMembers: GroupMember[] = members.map((m) => {
        const metadata = AssignerProtocol.MemberMetadata.decode(m.memberMetadata);
        const owned = decodeOwned(metadata?.userData);
        return { memberId: m.memberId, topics: metadata?.topics ?? topics, ...(owned === undefined ? {} : { owned }) };
      });
      const wanted = [...new Set(groupMembers.flatMap((m) => m.topics))];
      // Topics other members subscribe to that this leader has no metadata for yet (it has not
      // refreshed its own list): asked for now, so that they are assigned in this rebalance.
      const unknown = wanted.filter((topic) => partitionsOf(cluster, topic).length === 0);
      if (unknown.length > 0) await cluster.addMultipleTargetTopics(unknown).catch(() => undefined);
      const partitionsByTopic = new Map<string, number[]>();
      // A topic still without metadata gets no partitions this round; the next rebalance assigns it.
      for (const topic of wanted) partitionsByTopic.set(topic, partitionsOf(cluster, topic));
      const plan = balancedAssignment(groupMembers, partitionsByTopic);
      return [...plan].map(([memberId, assignment]) => ({
        memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 1, assignment, userData: Buffer.alloc(0) }),
      }));
    },
    protocol({ topics }) {
      return { name: BALANCED_ASSIGNER_NAME, metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData: encodeOwned(options.owned?.()) }) };
    },
  });
}

/** The assigner without stickiness (tests, tools). */
export const BalancedAssigner: PartitionAssigner = balancedAssigner();

function partitionsOf(cluster: { findTopicPartitionMetadata(topic: string): { partitionId: number }[] }, topic: string): number[] {
  try {
    return cluster.findTopicPartitionMetadata(topic).map((p) => p.partitionId);
  } catch {
    return []; // metadata not loaded yet
  }
}
