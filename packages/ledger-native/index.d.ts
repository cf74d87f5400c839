// Declarations for @relayburn/ledger-native: the public API of
// @relayburn/ledger 1.10.0 (without openArchive, the storage adapter
// classes, the id-hash helpers, reclassifyLedger and the hook settings).

// ----------------------------------------------------------- record shapes

export type SourceKind =
  | 'claude-code'
  | 'codex'
  | 'opencode'
  | 'anthropic-api'
  | 'openai-api'
  | 'gemini-api';

export interface Usage {
  input: number;
  output: number;
  reasoning: number;
  cacheRead: number;
  cacheCreate5m: number;
  cacheCreate1h: number;
}

export interface ToolCall {
  id: string;
  name: string;
  argsHash: string;
  target?: string;
  isError?: boolean;
  editPreHash?: string;
  editPostHash?: string;
  skillName?: string;
  replacedTools?: string[];
  collapsedCalls?: number;
}

export interface Subagent {
  isSidechain: boolean;
  parentToolUseId?: string;
  agentId?: string;
  parentAgentId?: string;
  subagentType?: string;
  description?: string;
}

export interface Coverage {
  hasInputTokens: boolean;
  hasOutputTokens: boolean;
  hasReasoningTokens: boolean;
  hasCacheReadTokens: boolean;
  hasCacheCreateTokens: boolean;
  hasToolCalls: boolean;
  hasToolResultEvents: boolean;
  hasSessionRelationships: boolean;
  hasRawContent: boolean;
}

export interface Fidelity {
  class: 'full' | 'usage-only' | 'aggregate-only' | 'cost-only' | 'partial';
  granularity: 'per-turn' | 'per-message' | 'per-session-aggregate' | 'cost-only';
  coverage: Coverage;
}

export interface TurnRecord {
  v: 1;
  source: SourceKind;
  sessionId: string;
  sessionPath?: string;
  messageId: string;
  turnIndex: number;
  ts: string;
  model: string;
  project?: string;
  projectKey?: string;
  usage: Usage;
  toolCalls: ToolCall[];
  filesTouched?: string[];
  subagent?: Subagent;
  stopReason?: string;
  activity?: string;
  retries?: number;
  hasEdits?: boolean;
  fidelity?: Fidelity;
}

export interface UserTurnRecord {
  v: 1;
  source: SourceKind;
  sessionId: string;
  userUuid: string;
  ts: string;
  precedingMessageId?: string;
  followingMessageId?: string;
  blocks: Array<{
    kind: 'tool_result' | 'text';
    toolUseId?: string;
    byteLen: number;
    approxTokens: number;
    isError?: boolean;
  }>;
}

export interface SessionRelationshipRecord {
  v: 1;
  source: SourceKind | 'spawn-env' | 'native-claude' | 'native-opencode';
  sessionId: string;
  relatedSessionId?: string;
  relationshipType: 'root' | 'continuation' | 'fork' | 'subagent';
  ts?: string;
  sourceSessionId?: string;
  sourceVersion?: string;
  parentToolUseId?: string;
  agentId?: string;
  subagentType?: string;
  description?: string;
}

export interface ToolResultEventRecord {
  v: 1;
  source: SourceKind;
  sessionId: string;
  messageId?: string;
  toolUseId: string;
  callIndex?: number;
  eventIndex: number;
  ts?: string;
  status: 'running' | 'completed' | 'errored' | 'cancelled' | 'unknown';
  eventSource:
    | 'tool_result'
    | 'subagent_notification'
    | 'queue_event'
    | 'progress_event'
    | 'function_call_output';
  contentLength?: number;
  contentHash?: string;
  isError?: boolean;
  usage?: Usage;
  usageAttribution?: 'single-tool-turn' | 'even-split-turn';
  subagentSessionId?: string;
  agentId?: string;
  replacedTools?: string[];
  collapsedCalls?: number;
}

export interface CompactionEvent {
  v: 1;
  source: SourceKind;
  sessionId: string;
  ts: string;
  precedingMessageId?: string;
  tokensBeforeCompact?: number;
}

export interface ContentRecord {
  v: 1;
  source: SourceKind;
  sessionId: string;
  messageId: string;
  ts: string;
  role: 'user' | 'assistant' | 'tool_result';
  kind: 'text' | 'thinking' | 'tool_use' | 'tool_result';
  text?: string;
  toolUse?: { id: string; name: string; input: Record<string, unknown> };
  toolResult?: { toolUseId: string; content: unknown; isError?: boolean };
}

// ------------------------------------------------------------ ledger lines

export type Enrichment = Record<string, string>;

export interface MessageIdRange {
  fromMessageId?: string;
  toMessageId?: string;
  fromTs?: string;
  toTs?: string;
}

export interface StampSelector {
  sessionId?: string;
  messageId?: string;
  range?: MessageIdRange;
}

export interface TurnLine {
  v: 1;
  kind: 'turn';
  record: TurnRecord;
}
export interface StampLine {
  v: 1;
  kind: 'stamp';
  ts: string;
  selector: StampSelector;
  enrichment: Enrichment;
}
export interface CompactionLine {
  v: 1;
  kind: 'compaction';
  record: CompactionEvent;
}
export interface SessionRelationshipLine {
  v: 1;
  kind: 'relationship';
  record: SessionRelationshipRecord;
}
export interface ToolResultEventLine {
  v: 1;
  kind: 'tool_result_event';
  record: ToolResultEventRecord;
}
export interface UserTurnLine {
  v: 1;
  kind: 'user_turn';
  record: UserTurnRecord;
}
export type LedgerLine =
  | TurnLine
  | StampLine
  | CompactionLine
  | SessionRelationshipLine
  | ToolResultEventLine
  | UserTurnLine;

export function isTurnLine(line: unknown): line is TurnLine;
export function isStampLine(line: unknown): line is StampLine;
export function isCompactionLine(line: unknown): line is CompactionLine;
export function isSessionRelationshipLine(line: unknown): line is SessionRelationshipLine;
export function isToolResultEventLine(line: unknown): line is ToolResultEventLine;
export function isUserTurnLine(line: unknown): line is UserTurnLine;
export function stampMatches(stamp: StampLine, turn: TurnRecord): boolean;

// ----------------------------------------------------------------- writers

export function appendTurns(turns: TurnRecord[]): Promise<void>;
export function appendCompactions(events: CompactionEvent[]): Promise<void>;
export function appendRelationships(records: SessionRelationshipRecord[]): Promise<void>;
export function appendToolResultEvents(records: ToolResultEventRecord[]): Promise<void>;
export function appendUserTurns(records: UserTurnRecord[]): Promise<void>;
export function stamp(selector: StampSelector, enrichment: Enrichment): Promise<void>;

// ----------------------------------------------------------------- queries

export interface Query {
  since?: string;
  until?: string;
  project?: string;
  sessionId?: string;
  source?: SourceKind;
  enrichment?: Partial<Record<string, string>>;
}

export interface EnrichedTurn extends TurnRecord {
  enrichment: Enrichment;
}

export function query(q?: Query): AsyncIterable<EnrichedTurn>;
export function queryAll(q?: Query): Promise<EnrichedTurn[]>;
export function queryCompactions(q?: Query): Promise<CompactionEvent[]>;
export function queryRelationships(q?: Query): Promise<SessionRelationshipRecord[]>;
export function queryToolResultEvents(q?: Query): Promise<ToolResultEventRecord[]>;
export function queryUserTurns(q?: Query): Promise<UserTurnRecord[]>;

// ------------------------------------------------------------------- paths

export function ledgerHome(): string;
export function ledgerPath(): string;
export function hwmPath(): string;
export function cursorsPath(): string;
export function ledgerIndexPath(): string;
export function ledgerContentIndexPath(): string;
export function lockPath(name: string): string;
export function pricingOverridePath(): string;
export function configPath(): string;
export function archivePath(): string;
export function sqlitePath(): string;
export function contentDir(): string;
export function contentFilePath(sessionId: string): string;
export function isValidSessionId(sessionId: string): boolean;

// ----------------------------------------------------------------- archive

export const ARCHIVE_VERSION: 3;

export interface ArchiveStatus {
  archivePath: string;
  exists: boolean;
  archiveVersion: number;
  ledgerOffsetBytes: number;
  ledgerMtimeMs: number;
  ledgerSizeBytes: number;
  ledgerMtimeMsCurrent: number;
  upToDate: boolean;
  lastBuiltAt: string | null;
  lastRebuildAt: string | null;
  rowCounts: {
    sessions: number;
    turns: number;
    toolCalls: number;
    toolResultEvents: number;
    compactions: number;
  };
  fidelityHistogram: Record<string, number>;
}

export interface VacuumResult {
  archivePath: string;
  existed: boolean;
  beforeBytes: number;
  afterBytes: number;
  reclaimedBytes: number;
}

export interface BuildResult {
  scannedBytes: number;
  turnsApplied: number;
  sessionsTouched: number;
  stampsApplied: number;
  compactionsApplied: number;
  toolResultEventsApplied: number;
  rebuiltFromZero: boolean;
  /** Extension: records skipped as unarchivable (present only when some were). */
  skippedRecords?: number;
  /** Extension: the first of them, by byte offset in the ledger. */
  skipped?: Array<{ offset: number; kind: string; reason: string }>;
}

export function buildArchive(): Promise<BuildResult>;
export function rebuildArchive(): Promise<BuildResult>;
export function vacuumArchive(): Promise<VacuumResult>;
export function getArchiveStatus(): Promise<ArchiveStatus>;
export function archiveAvailable(): Promise<boolean>;
export function queryAllFromArchive(q?: Query): Promise<EnrichedTurn[]>;
export function queryTurnsFromArchive(q?: Query): Promise<EnrichedTurn[]>;

// ----------------------------------------------------------------- content

export interface PruneOptions {
  olderThanMs: number;
  isRecoverable?: (sessionId: string) => boolean | Promise<boolean>;
}

export interface PruneResult {
  filesDeleted: number;
  bytesFreed: number;
  skippedRecoverable: number;
}

export interface ReadContentSelector {
  sessionId: string;
  messageId?: string;
}

export function appendContent(records: ContentRecord[]): Promise<void>;
export function readContent(selector: ReadContentSelector): Promise<ContentRecord[]>;
export function pruneContent(options: PruneOptions): Promise<PruneResult>;
export function listContentSessionIds(): Promise<Set<string>>;

// ------------------------------------------------------------------ config

export interface ContentConfig {
  store: 'full' | 'hash-only' | 'off';
  retentionDays: number | 'forever';
}
export interface BurnConfig {
  content: ContentConfig;
}
export const DEFAULT_CONFIG: BurnConfig;
export function loadConfig(): Promise<BurnConfig>;
export function retentionMs(r: number | 'forever'): number | null;

// --------------------------------------------------------- hwm and cursors

export interface HwmEntry {
  lastMessageId: string;
  lastTs: string;
  mtimeMs: number;
}
export type HwmMap = Record<string, HwmEntry>;
export function loadHwm(): Promise<HwmMap>;
export function saveHwm(map: HwmMap): Promise<void>;

export interface ClaudeCursor {
  kind: 'claude';
  inode: number;
  offsetBytes: number;
  mtimeMs: number;
  lastUserText?: string;
}
export interface CodexCursor {
  kind: 'codex';
  inode: number;
  offsetBytes: number;
  mtimeMs: number;
  cumulative: { input: number; output: number; cacheRead: number; reasoning: number };
  sessionId: string;
  sessionCwd?: string;
  turnContexts: Record<string, { turn_id?: string; cwd?: string; model?: string }>;
  userTurnSlot?: unknown;
  rootSessionEmitted?: boolean;
  nextEventIndex?: number;
  toolResultCounters?: Record<string, number>;
  lastCompletedTurn?: unknown;
}
export interface OpencodeCursor {
  kind: 'opencode';
  inode: number;
  mtimeMs: number;
  seenMessageIds: string[];
}
export interface OpencodeStreamCursor {
  kind: 'opencode-stream';
  [field: string]: unknown;
}
export type FileCursor = ClaudeCursor | CodexCursor | OpencodeCursor | OpencodeStreamCursor;

export function loadCursors(): Promise<Record<string, FileCursor>>;
export function saveCursors(map: Record<string, FileCursor>): Promise<void>;
export function saveCursorChanges(
  before: Record<string, FileCursor>,
  after: Record<string, FileCursor>,
): Promise<void>;
export function updateCursors(
  mutate: (map: Record<string, FileCursor>) => void | Promise<void>,
): Promise<void>;

// ------------------------------------------------------------ locks, index

export function withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
export function rebuildIndex(): Promise<{ ids: number; content: number }>;
export function invalidateIndexCache(): void;
export const __resetIndexCacheForTesting: typeof invalidateIndexCache;
/** Choose the storage again from `RELAYBURN_STORAGE` at the next call. */
export function __resetStorageForTesting(): void;
/** Append a stamp line as given, its `ts` included (for replaying recorded scripts). */
export function __appendStampLineForTesting(line: StampLine): Promise<void>;
