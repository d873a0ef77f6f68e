//! CROW's table contracts.
//!
//! Every table CROW writes is a Delta table whose Arrow schema is defined
//! here, once. Column names are a public contract: analysts' SQL, exports and
//! external readers (Spark, DuckDB, polars, the Python `deltalake` package)
//! depend on them. A change to a table bumps its [`TableDef::version`], which
//! is recorded in the Delta table's configuration (`crow.schema.version`).
//!
//! Conventions that hold for every table:
//! - every row carries `org_id` (the tenant);
//! - timestamps are UTC microseconds (`Timestamp(Microsecond, "UTC")`);
//! - large tables are partitioned by a date column, never by `org_id`
//!   (thousands of tenants would make thousands of tiny files);
//! - nested, schema-less payloads (`properties`, `context`, `evidence`, …)
//!   are JSON text so every reader can open them.
//!
//! This crate does no I/O.
#![warn(missing_docs)]

pub mod config;
pub mod job;
pub mod metric;
pub mod metrics;
pub mod net;
pub mod rows;
pub mod secret;
pub mod segment;
pub mod time;
pub mod timeline;

use std::sync::Arc;

pub use arrow_schema;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
pub use job::JobName;
pub use secret::Secret;

/// The logical type of a column, mapped to one Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Bool,
    /// UTC timestamp in microseconds.
    Timestamp,
    /// Calendar date (days since the epoch).
    Date,
    /// List of UTF-8 text values.
    TextList,
    /// List of 32-bit floats (an embedding vector).
    Float32List,
}

impl ColumnType {
    /// The Arrow data type of this column type.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => timestamp_type(),
            ColumnType::Date => DataType::Date32,
            ColumnType::TextList => {
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
            }
            ColumnType::Float32List => {
                DataType::List(Arc::new(Field::new("element", DataType::Float32, true)))
            }
        }
    }

    /// A short name for documentation.
    pub fn doc_name(self) -> &'static str {
        match self {
            ColumnType::Text => "string",
            ColumnType::Int64 => "bigint",
            ColumnType::Int32 => "int",
            ColumnType::Float64 => "double",
            ColumnType::Bool => "boolean",
            ColumnType::Timestamp => "timestamp (UTC, µs)",
            ColumnType::Date => "date",
            ColumnType::TextList => "array<string>",
            ColumnType::Float32List => "array<float>",
        }
    }
}

/// The Arrow type of every CROW timestamp: UTC microseconds.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One column of a table contract.
#[derive(Debug, Clone, Copy)]
pub struct ColumnDef {
    /// Column name (snake_case, stable).
    pub name: &'static str,
    /// Logical type.
    pub ty: ColumnType,
    /// Whether the column may be null.
    pub nullable: bool,
    /// What the column means.
    pub doc: &'static str,
}

const fn req(name: &'static str, ty: ColumnType, doc: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        nullable: false,
        doc,
    }
}

const fn opt(name: &'static str, ty: ColumnType, doc: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        nullable: true,
        doc,
    }
}

/// A table contract: name, version, columns and partitioning.
#[derive(Debug, Clone, Copy)]
pub struct TableDef {
    /// Table name (plural snake_case); also its folder in the lake and its
    /// name in SQL.
    pub name: &'static str,
    /// Schema version; bumped on every change to the columns.
    pub version: u32,
    /// What one row is.
    pub doc: &'static str,
    /// Columns in order.
    pub columns: &'static [ColumnDef],
    /// Partition columns (dates), empty for small tables.
    pub partition_by: &'static [&'static str],
    /// Columns holding secrets that are never readable through the query API.
    pub secret_columns: &'static [&'static str],
}

impl TableDef {
    /// The Arrow schema of this table.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(c.name, c.ty.data_type(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    /// The column named `name`, if any.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }
}

use ColumnType::*;

/// `organizations`: one row per tenant (a brand).
pub const ORGANIZATIONS: TableDef = TableDef {
    name: "organizations",
    version: 3,
    doc: "One row per organization (a brand, the tenant).",
    columns: &[
        req("org_id", Text, "Organization id (`org_` + 26 characters)."),
        req("name", Text, "Display name."),
        opt("domain", Text, "The brand's primary web domain."),
        req(
            "write_key_hash",
            Text,
            "SHA-256 (hex) of the ingest write key; the key itself is shown once and never stored.",
        ),
        req(
            "write_key_prefix",
            Text,
            "First characters of the write key, to recognise it.",
        ),
        opt(
            "context",
            Text,
            "Free text about the brand, given to the AI provider as context.",
        ),
        req("status", Text, "'active' or 'disabled'."),
        req(
            "created_at",
            Timestamp,
            "When the organization was created.",
        ),
        req("updated_at", Timestamp, "Last change."),
        opt(
            "previous_write_key_hash",
            Text,
            "SHA-256 of the write key replaced by the last rotation, still accepted until `previous_write_key_expires_at` (v2).",
        ),
        opt(
            "previous_write_key_expires_at",
            Timestamp,
            "End of the previous write key's grace period (v2).",
        ),
        opt(
            "webhook_url",
            Text,
            "Where notifications are POSTed (HMAC-signed), if set (v3).",
        ),
        opt(
            "webhook_secret",
            Text,
            "The key that signs webhook bodies. Never readable through the API (v3).",
        ),
    ],
    partition_by: &[],
    secret_columns: &["write_key_hash", "previous_write_key_hash", "webhook_secret"],
};

/// `api_keys`: query API keys (hash only).
pub const API_KEYS: TableDef = TableDef {
    name: "api_keys",
    version: 1,
    doc: "One row per query API key. Only a hash of the secret is stored.",
    columns: &[
        req("org_id", Text, "Organization the key belongs to."),
        req("key_id", Text, "Public key id (`key_` + 26 characters)."),
        req(
            "key_hash",
            Text,
            "SHA-256 (hex) of the secret. Never readable through the API.",
        ),
        req(
            "key_prefix",
            Text,
            "First characters of the secret, to recognise it.",
        ),
        req("scope", Text, "'read', 'export' or 'admin'."),
        opt("name", Text, "Optional label."),
        req("created_at", Timestamp, "When the key was created."),
        opt(
            "expires_at",
            Timestamp,
            "Expiry; null for a key that never expires.",
        ),
        opt(
            "revoked_at",
            Timestamp,
            "When the key was revoked; null while valid.",
        ),
    ],
    partition_by: &[],
    secret_columns: &["key_hash"],
};

/// `products`: the brand's catalog.
pub const PRODUCTS: TableDef = TableDef {
    name: "products",
    version: 1,
    doc: "The brand's product catalog, one row per product (unique per org by sku, else url).",
    columns: &[
        req("org_id", Text, "Organization."),
        req(
            "product_id",
            Text,
            "Stable product id (the brand's own id, else derived from sku/url).",
        ),
        opt("sku", Text, "Stock keeping unit."),
        req("name", Text, "Product name."),
        opt("url", Text, "Canonical product page URL."),
        opt(
            "category",
            Text,
            "Category path, e.g. 'Audio > Headphones'.",
        ),
        opt("brand", Text, "Brand name."),
        opt("price", Float64, "Current price."),
        opt("currency", Text, "ISO 4217 currency of `price`."),
        opt("description", Text, "Product description."),
        opt("image_url", Text, "Main image URL."),
        req("source", Text, "'import', 'crawl' or 'demo'; a crawled product read from a page rendered in headless Chromium is 'crawl+browser', one extracted by AI refinement 'crawl+ai' (or 'crawl+browser+ai')."),
        req("created_at", Timestamp, "First seen."),
        req("updated_at", Timestamp, "Last upsert."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `raw_web_events`: web/app events as received by the collector.
pub const RAW_WEB_EVENTS: TableDef = TableDef {
    name: "raw_web_events",
    version: 1,
    doc:
        "One row per received Segment-style event, as received (deduplication happens downstream).",
    columns: &[
        req("org_id", Text, "Organization (from the write key)."),
        req(
            "message_id",
            Text,
            "Segment `messageId`; generated by the collector when absent.",
        ),
        req(
            "type",
            Text,
            "'track', 'page', 'screen', 'identify', 'group' or 'alias'.",
        ),
        opt(
            "event",
            Text,
            "Event name for track calls, e.g. 'Product Viewed'.",
        ),
        opt("name", Text, "Page or screen name."),
        opt("anonymous_id", Text, "Segment `anonymousId`."),
        opt("user_id", Text, "Segment `userId`."),
        opt("group_id", Text, "Segment `groupId` (group calls)."),
        opt("previous_id", Text, "Segment `previousId` (alias calls)."),
        req(
            "occurred_at",
            Timestamp,
            "When the event happened: `timestamp` corrected for client clock skew.",
        ),
        opt(
            "original_timestamp",
            Timestamp,
            "The client's `timestamp` as sent.",
        ),
        opt("sent_at", Timestamp, "The client's `sentAt`."),
        req(
            "received_at",
            Timestamp,
            "When the collector received the request.",
        ),
        req(
            "timestamp_corrected",
            Bool,
            "True when a future timestamp was clamped to the receive time.",
        ),
        opt(
            "page_url",
            Text,
            "Page URL (query parameters stripped as configured).",
        ),
        opt("page_path", Text, "Page path."),
        opt("page_referrer", Text, "Referrer URL."),
        opt("page_title", Text, "Page title."),
        opt("user_agent", Text, "User agent."),
        opt(
            "ip_hash",
            Text,
            "Salted SHA-256 of the client IP; the raw IP is never stored.",
        ),
        opt(
            "device_type",
            Text,
            "`context.device.type` ('mobile', 'desktop', 'tablet', …).",
        ),
        opt(
            "campaign_source",
            Text,
            "`context.campaign.source` (utm_source).",
        ),
        opt("campaign_medium", Text, "`context.campaign.medium`."),
        opt("campaign_name", Text, "`context.campaign.name`."),
        opt("product_id", Text, "E-commerce `properties.product_id`."),
        opt("product_sku", Text, "E-commerce `properties.sku`."),
        opt("product_name", Text, "E-commerce `properties.name`."),
        opt("product_price", Float64, "E-commerce `properties.price`."),
        opt(
            "product_quantity",
            Int64,
            "E-commerce `properties.quantity`.",
        ),
        opt(
            "product_category",
            Text,
            "E-commerce `properties.category`.",
        ),
        opt("currency", Text, "E-commerce `properties.currency`."),
        opt("order_id", Text, "E-commerce `properties.order_id`."),
        opt(
            "revenue",
            Float64,
            "E-commerce `properties.revenue` / `total`.",
        ),
        opt("properties", Text, "`properties` as JSON text."),
        opt("traits", Text, "`traits` as JSON text."),
        opt("context", Text, "`context` as JSON text (IP removed)."),
        opt("integrations", Text, "`integrations` as JSON text."),
        req(
            "event_date",
            Date,
            "UTC date of `occurred_at` (partition column).",
        ),
    ],
    partition_by: &["event_date"],
    secret_columns: &[],
};

/// `raw_social_captures`: social media posts and pages captured.
pub const RAW_SOCIAL_CAPTURES: TableDef = TableDef {
    name: "raw_social_captures",
    version: 1,
    doc: "One row per captured social post or page.",
    columns: &[
        req("org_id", Text, "Organization."),
        req(
            "capture_id",
            Text,
            "Capture id (client-supplied or generated).",
        ),
        req(
            "run_id",
            Text,
            "The collector run that captured it (one run is one session).",
        ),
        req(
            "platform",
            Text,
            "e.g. 'instagram', 'tiktok', 'x', 'reddit', 'web'.",
        ),
        req("url", Text, "URL as captured."),
        opt("canonical_url", Text, "Canonical URL."),
        opt("author", Text, "Author handle or name."),
        opt("published_at", Timestamp, "When the post was published."),
        req("captured_at", Timestamp, "When it was captured."),
        opt("text", Text, "Text content."),
        req(
            "content_hash",
            Text,
            "SHA-256 of the text, for deduplication.",
        ),
        opt(
            "metrics",
            Text,
            "Engagement metrics as JSON text (likes, shares, …).",
        ),
        req("received_at", Timestamp, "When the collector received it."),
        req(
            "event_date",
            Date,
            "UTC date of `captured_at` (partition column).",
        ),
    ],
    partition_by: &["event_date"],
    secret_columns: &[],
};

/// `raw_cctv_transcripts`: CCTV transcript segments from stores.
pub const RAW_CCTV_TRANSCRIPTS: TableDef = TableDef {
    name: "raw_cctv_transcripts",
    version: 1,
    doc: "One row per CCTV transcript segment.",
    columns: &[
        req("org_id", Text, "Organization."),
        req(
            "segment_id",
            Text,
            "Segment id (client-supplied or generated).",
        ),
        req("store_id", Text, "Store."),
        req("camera_id", Text, "Camera."),
        req(
            "segment_start",
            Timestamp,
            "Start of the transcribed segment.",
        ),
        req("segment_end", Timestamp, "End of the transcribed segment."),
        req("text", Text, "Transcript text."),
        opt(
            "observations",
            Text,
            "Structured observations as JSON text.",
        ),
        opt("model", Text, "The model that produced the transcript."),
        req("received_at", Timestamp, "When the collector received it."),
        req(
            "event_date",
            Date,
            "UTC date of `segment_start` (partition column).",
        ),
    ],
    partition_by: &["event_date"],
    secret_columns: &[],
};

/// `failed_events`: everything that could not be accepted, with the reason.
pub const FAILED_EVENTS: TableDef = TableDef {
    name: "failed_events",
    version: 1,
    doc: "Anything the collector or a job could not accept, with the reason and the original payload. Nothing is dropped silently.",
    columns: &[
        opt("org_id", Text, "Organization, when known."),
        req("failure_id", Text, "Failure id."),
        req("source", Text, "Who rejected it: 'collector' or 'job:<name>'."),
        opt("channel", Text, "'web', 'social' or 'cctv'."),
        opt("message_id", Text, "The rejected event's message id, when it had one."),
        req("reason_code", Text, "Stable machine-readable reason, e.g. 'missing_field'."),
        req("reason", Text, "Human-readable reason."),
        opt("payload", Text, "The original payload, as received."),
        req("failed_at", Timestamp, "When it was rejected."),
        req("event_date", Date, "UTC date of `failed_at` (partition column)."),
    ],
    partition_by: &["event_date"],
    secret_columns: &[],
};

/// `sessions`: one row per closed session of any channel.
pub const SESSIONS: TableDef = TableDef {
    name: "sessions",
    version: 1,
    doc: "One row per closed session of any channel, with a compact timeline.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("session_id", Text, "Deterministic session id (same input, same id)."),
        req("channel", Text, "'web', 'social' or 'cctv'."),
        opt("visitor_id", Text, "Web: the stitched visitor (user id, else anonymous id). CCTV: store/camera. Social: platform."),
        opt("user_id", Text, "Known user id, if any."),
        opt("anonymous_ids", TextList, "Anonymous ids stitched into this session."),
        req("started_at", Timestamp, "First activity."),
        req("ended_at", Timestamp, "Last activity."),
        req("event_count", Int64, "Number of source events."),
        opt("page_views", Int64, "Page and screen views (web)."),
        opt("product_ids", TextList, "Product ids referenced by the events."),
        opt("device_type", Text, "Device type (web)."),
        opt("traffic_source", Text, "Traffic source (web: utm source, referrer host or 'direct')."),
        opt("is_returning", Bool, "Web: whether the visitor had an earlier session."),
        opt("converted", Bool, "Whether the session includes an order."),
        opt("source_ref", Text, "CCTV: store/camera; social: run id."),
        req("timeline", Text, "Compact timeline as JSON text: [[offset_s, kind, detail], …]."),
        req("source_ids", TextList, "Message/segment/capture ids of the source rows (lineage)."),
        req("job_run_id", Text, "The job run that wrote the row."),
        req("session_date", Date, "UTC date of `started_at` (partition column)."),
    ],
    partition_by: &["session_date"],
    secret_columns: &[],
};

/// `interactions`: AI-written records of what a person did.
pub const INTERACTIONS: TableDef = TableDef {
    name: "interactions",
    version: 1,
    doc: "One AI-written record per session: what happened, with which products, and full lineage.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("interaction_id", Text, "Interaction id."),
        req("session_id", Text, "Source session."),
        req("channel", Text, "'web', 'social' or 'cctv'."),
        req("started_at", Timestamp, "Session start."),
        req("ended_at", Timestamp, "Session end."),
        req(
            "description",
            Text,
            "What happened, in one or two sentences.",
        ),
        opt(
            "intent",
            Text,
            "What the person wanted ('research', 'purchase', …).",
        ),
        opt("sentiment", Text, "'positive', 'neutral' or 'negative'."),
        opt(
            "outcome",
            Text,
            "How it ended ('purchased', 'abandoned_cart', …).",
        ),
        req("product_ids", TextList, "Catalog products involved."),
        opt("confidence", Float64, "Model confidence, 0..1."),
        req("source_ids", TextList, "Source event ids (lineage)."),
        req(
            "provider",
            Text,
            "AI provider ('offline', 'gemini', 'openai').",
        ),
        req("model", Text, "Model name."),
        req("prompt_version", Text, "Prompt template version."),
        req("prompt_hash", Text, "SHA-256 of the full prompt."),
        req("input_tokens", Int64, "Prompt tokens."),
        req("output_tokens", Int64, "Completion tokens."),
        req("created_at", Timestamp, "When it was written."),
        req(
            "session_date",
            Date,
            "UTC date of `started_at` (partition column).",
        ),
    ],
    partition_by: &["session_date"],
    secret_columns: &[],
};

/// `patterns`: what stands out per day, week, month, year and all time.
pub const PATTERNS: TableDef = TableDef {
    name: "patterns",
    version: 2,
    doc: "One row per significant pattern of one period.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("pattern_id", Text, "Pattern id."),
        req(
            "period_kind",
            Text,
            "'day', 'week', 'month', 'year' or 'all'.",
        ),
        req("period_start", Date, "First day of the period."),
        req(
            "period_end",
            Date,
            "Day after the last day of the period (exclusive).",
        ),
        req(
            "kind",
            Text,
            "Pattern kind: 'volume', 'funnel', 'transition', 'errors', 'product_trend', …",
        ),
        opt(
            "segment",
            Text,
            "Segment, e.g. 'device_type=mobile'; null for all traffic.",
        ),
        req("title", Text, "One-line title."),
        req("description", Text, "Narrative over the evidence."),
        req("product_ids", TextList, "Products involved."),
        req(
            "support",
            Int64,
            "Number of sessions or events supporting the pattern.",
        ),
        opt(
            "significance",
            Float64,
            "Statistical significance (e.g. |z| or -log10 p).",
        ),
        req(
            "evidence",
            Text,
            "JSON text: metric values, baseline, significance, sample interaction ids.",
        ),
        req("provider", Text, "Who wrote the description."),
        req("model", Text, "Model name."),
        req("created_at", Timestamp, "When it was written."),
        opt(
            "provisional",
            Bool,
            "True while the period is in progress (its figures cover its complete days so far; recomputed as it fills); false once it is over. Added in schema v2: null in rows written before.",
        ),
    ],
    partition_by: &["period_kind"],
    secret_columns: &[],
};

/// `stories`: findings that share a cause, told once.
pub const STORIES: TableDef = TableDef {
    name: "stories",
    version: 1,
    doc: "One row per story: day findings of one organization that share a cause (linked metrics on consecutive days, in any segment) grouped into one account with its start, its end or 'ongoing', the segments affected and not affected, and its estimated impact against the baseline. The patterns job rewrites an organization's stories on every run from its day findings (listed in `pattern_ids`).",
    columns: &[
        req("org_id", Text, "Organization."),
        req(
            "story_id",
            Text,
            "Story id (organization, cause and first day).",
        ),
        req(
            "kind",
            Text,
            "The cause's family: 'conversion' (funnel, payments, failures), 'traffic' (sessions, visitors, events), 'product' (one product's views and sales), or the metric's own kind.",
        ),
        req(
            "direction",
            Text,
            "'worse' or 'better' for the brand (a conversion that fell and failures that rose are both 'worse'); traffic and products: 'fell' or 'rose'.",
        ),
        req("start_date", Date, "First day with a finding."),
        req("last_date", Date, "Last day with a finding."),
        opt(
            "end_date",
            Date,
            "Day after the last day (exclusive); null while the story is ongoing.",
        ),
        req(
            "ongoing",
            Bool,
            "Found on the last complete day (or the day before): not over yet.",
        ),
        req("title", Text, "One-line title, leading with the impact and the segment."),
        req("description", Text, "What happened, to whom, and what it cost or gained."),
        req(
            "segments_affected",
            TextList,
            "Segments with findings, e.g. 'device_type=mobile'; empty when only all traffic is.",
        ),
        req(
            "segments_unaffected",
            TextList,
            "Other values of the affected segments' dimensions, with data on the story's days and no finding (e.g. 'device_type=desktop').",
        ),
        req("product_ids", TextList, "Products involved."),
        req("metrics", TextList, "Metrics found (e.g. 'funnel:payment>order')."),
        req(
            "pattern_ids",
            TextList,
            "The day findings the story groups (`patterns.pattern_id`).",
        ),
        req("sample_session_ids", TextList, "Sample sessions."),
        req("sample_interaction_ids", TextList, "Sample interactions."),
        req(
            "impact_unit",
            Text,
            "Unit of the impact: 'orders', 'sessions', 'visitors', 'product views' or 'events'.",
        ),
        req(
            "impact",
            Float64,
            "Estimated difference from the baseline over the story's days (negative: lost).",
        ),
        req("impact_low", Float64, "Lower bound of the impact's 95% interval."),
        req("impact_high", Float64, "Upper bound of the impact's 95% interval."),
        req(
            "significance",
            Float64,
            "Largest |z| of the story's findings.",
        ),
        req(
            "rank_score",
            Float64,
            "What stories are ordered by: the impact at least (the 95% bound nearest zero) times what its unit is worth (order 10, session or visitor 1, product view 0.3, event 0.1).",
        ),
        req(
            "evidence",
            Text,
            "JSON text: the lead finding, the segment and baseline the impact was estimated on, per-day figures.",
        ),
        req("created_at", Timestamp, "When it was written."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `daily_metrics`: the patterns job's figures per organization and day.
pub const DAILY_METRICS: TableDef = TableDef {
    name: "daily_metrics",
    version: 1,
    doc: "One row per organization, UTC day, metric and segment: the figure the patterns job tests, counted once from the day's sessions. A daily run counts only the days it has no figures for, or whose `sessions` or `interactions` files changed since (a backfill, a late session, a re-enrichment, a compaction), and reads every other day's figures from here: its cost follows the day, not the history. The dashboard draws a pattern's evidence from the same rows. An organization with no session on a day has no rows for it.",
    columns: &[
        req("org_id", Text, "Organization."),
        req(
            "metric",
            Text,
            "The metric, named as in `patterns.evidence`: 'sessions', 'visitors', 'funnel:view>cart', 'event:Product Viewed', 'error_at:Payment Failed@payment', 'transition:a>b', 'product_views:p-1', 'pair:p-1|p-2', …",
        ),
        req(
            "segment",
            Text,
            "Segment, e.g. 'device_type=mobile'; empty for all traffic.",
        ),
        req(
            "k",
            Float64,
            "The count, or a rate's hits (revenue: the sum of the orders' amounts).",
        ),
        req(
            "n",
            Float64,
            "A rate's trials (a product's views: the day's sessions; revenue: the orders that carried an amount); 0 for a count.",
        ),
        req(
            "hit_session_ids",
            TextList,
            "Up to five sessions counted as hits, in session id order (the samples a finding cites).",
        ),
        req(
            "hit_interaction_ids",
            TextList,
            "The interactions of `hit_session_ids`, element by element (null where a session has none).",
        ),
        req("miss_session_ids", TextList, "Up to five sessions counted as misses of a rate."),
        req(
            "miss_interaction_ids",
            TextList,
            "The interactions of `miss_session_ids`, element by element.",
        ),
        req(
            "source_fingerprint",
            Text,
            "SHA-256 of the day's live `sessions` and `interactions` files when it was counted: another value now means the day changed and is counted again.",
        ),
        req("computed_at", Timestamp, "When the day was counted."),
        req("metric_date", Date, "UTC day (partition column)."),
    ],
    partition_by: &["metric_date"],
    secret_columns: &[],
};

/// `usage_daily`: per org per day usage and its priced amount.
pub const USAGE_DAILY: TableDef = TableDef {
    name: "usage_daily",
    version: 1,
    doc: "Per organization per day: what was ingested and produced, and its priced amount.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("usage_date", Date, "UTC day."),
        req("events", Int64, "Raw events ingested (all channels)."),
        req("sessions", Int64, "Sessions written."),
        req("interactions", Int64, "Interactions written."),
        req("patterns", Int64, "Patterns written."),
        req("ai_input_tokens", Int64, "AI prompt tokens."),
        req("ai_output_tokens", Int64, "AI completion tokens."),
        req(
            "amount_micros",
            Int64,
            "Priced amount in millionths of the currency unit.",
        ),
        req("currency", Text, "ISO 4217 currency."),
        req("computed_at", Timestamp, "When the row was computed."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `job_runs`: every job execution.
pub const JOB_RUNS: TableDef = TableDef {
    name: "job_runs",
    version: 1,
    doc: "One row per job execution (the run ledger); watermarks derive from it.",
    columns: &[
        req(
            "org_id",
            Text,
            "Organization, or '*' for a run over all organizations.",
        ),
        req("run_id", Text, "Run id."),
        req(
            "job",
            Text,
            "'sessionize', 'enrich', 'patterns', 'billing', …",
        ),
        req("window_start", Timestamp, "Window start (inclusive)."),
        req("window_end", Timestamp, "Window end (exclusive)."),
        req("status", Text, "'running', 'succeeded' or 'failed'."),
        req("trigger", Text, "'cli', 'schedule' or 'backfill'."),
        req("attempt", Int32, "Attempt number, from 1."),
        req("started_at", Timestamp, "Start."),
        opt("finished_at", Timestamp, "End."),
        opt("rows_in", Int64, "Rows read."),
        opt("rows_out", Int64, "Rows written."),
        opt("error", Text, "Error message of a failed run."),
        opt("host", Text, "Host that ran it."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `llm_cache`: AI responses by provider, model and prompt hash.
pub const LLM_CACHE: TableDef = TableDef {
    name: "llm_cache",
    version: 1,
    doc: "AI responses keyed by provider + model + prompt hash, so a re-run costs nothing.",
    columns: &[
        req("org_id", Text, "Organization."),
        req(
            "cache_key",
            Text,
            "SHA-256 of provider, model and prompt hash.",
        ),
        req("provider", Text, "AI provider."),
        req("model", Text, "Model name."),
        req("prompt_hash", Text, "SHA-256 of the prompt."),
        req("response", Text, "Validated response as JSON text."),
        req("input_tokens", Int64, "Prompt tokens of the original call."),
        req(
            "output_tokens",
            Int64,
            "Completion tokens of the original call.",
        ),
        req("created_at", Timestamp, "When it was cached."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `users`: the people of an organization (one organization per user).
pub const USERS: TableDef = TableDef {
    name: "users",
    version: 1,
    doc: "One row per user: a person who signs in to one organization with a role. Only an argon2id hash of the password is stored.",
    columns: &[
        req("org_id", Text, "The user's organization."),
        req("user_id", Text, "User id (`usr_` + 26 characters)."),
        req("email", Text, "E-mail address, lower case; unique across the lake."),
        opt("display_name", Text, "Name shown in the dashboard."),
        req("role", Text, "'owner', 'admin', 'analyst' or 'viewer'."),
        req(
            "status",
            Text,
            "'invited' (no password yet), 'active' or 'disabled'.",
        ),
        opt(
            "password_hash",
            Text,
            "argon2id hash (PHC string, per-user salt). Never readable through the API.",
        ),
        req("created_at", Timestamp, "When the user was created."),
        req("updated_at", Timestamp, "Last change."),
        opt("last_sign_in_at", Timestamp, "Last successful sign-in."),
    ],
    partition_by: &[],
    secret_columns: &["password_hash"],
};

/// `user_sessions`: signed-in browser sessions (hash of the cookie only).
pub const USER_SESSIONS: TableDef = TableDef {
    name: "user_sessions",
    version: 1,
    doc: "One row per sign-in session. The cookie holds an opaque random id; only its SHA-256 is stored.",
    columns: &[
        req("org_id", Text, "The user's organization."),
        req("session_id", Text, "Public session id (`ses_` + 26 characters)."),
        req(
            "session_hash",
            Text,
            "SHA-256 of the cookie's secret. Never readable through the API.",
        ),
        req("user_id", Text, "The user."),
        req("created_at", Timestamp, "Sign-in time."),
        req("last_seen_at", Timestamp, "Last request (updated at most every few minutes)."),
        req("expires_at", Timestamp, "Absolute end of the session."),
        opt("revoked_at", Timestamp, "Sign-out or revocation time."),
        opt("ip_hash", Text, "Salted hash of the client address at sign-in."),
        opt("user_agent", Text, "User-Agent at sign-in."),
    ],
    partition_by: &[],
    secret_columns: &["session_hash"],
};

/// `user_tokens`: one-time invitation and password-reset tokens.
pub const USER_TOKENS: TableDef = TableDef {
    name: "user_tokens",
    version: 1,
    doc: "One row per invitation or password-reset token: shown once, stored as a hash, valid until it expires or is used.",
    columns: &[
        req("org_id", Text, "The user's organization."),
        req("token_id", Text, "Token id (`tok_` + 26 characters)."),
        req(
            "token_hash",
            Text,
            "SHA-256 of the token. Never readable through the API.",
        ),
        req("user_id", Text, "The user it sets a password for."),
        req("kind", Text, "'invite' or 'reset'."),
        req("created_at", Timestamp, "When it was issued."),
        req("expires_at", Timestamp, "When it stops working."),
        opt("used_at", Timestamp, "When it was used (it works once)."),
    ],
    partition_by: &[],
    secret_columns: &["token_hash"],
};

/// `audit_log`: who did what, when, from where, with what outcome.
pub const AUDIT_LOG: TableDef = TableDef {
    name: "audit_log",
    version: 1,
    doc: "Append-only record of security-relevant actions: sign-ins, user and role changes, key changes, exports, organization changes. No API changes it.",
    columns: &[
        req("org_id", Text, "Organization acted on."),
        req("audit_id", Text, "Entry id (`aud_` + 26 characters)."),
        req("at", Timestamp, "When."),
        req("actor", Text, "Who: `user:<id>`, `key:<id>`, `cli` (an operator on the lake) or `anonymous`."),
        req("action", Text, "What, e.g. `auth.login`, `user.create`, `user.role`, `key.create`, `export.create`."),
        opt("target", Text, "What it acted on (a user, key or export id, an e-mail)."),
        req("outcome", Text, "'ok', 'denied' or 'failed'."),
        opt("ip_hash", Text, "Salted hash of the client address."),
        opt("user_agent", Text, "User-Agent."),
        opt("detail", Text, "More, as JSON text."),
        req("audit_date", Date, "UTC day of `at` (partition)."),
    ],
    partition_by: &["audit_date"],
    secret_columns: &[],
};

/// `notifications`: what the system tells a user.
pub const NOTIFICATIONS: TableDef = TableDef {
    name: "notifications",
    version: 1,
    doc: "One row per notification to one user: a failed scheduled job, a sign-in from a new device, an export ready.",
    columns: &[
        req("org_id", Text, "The user's organization."),
        req("notification_id", Text, "Id (`ntf_` + 26 characters)."),
        req("user_id", Text, "The user it is for."),
        req("kind", Text, "'job_failed', 'new_sign_in', 'export_ready', 'pattern', 'budget_exhausted'."),
        req("title", Text, "One line."),
        opt("body", Text, "More."),
        opt("link", Text, "Where to look (an API path or dashboard route)."),
        req("created_at", Timestamp, "When."),
        opt("read_at", Timestamp, "When the user marked it read."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `a2a_tasks`: the tasks of the A2A agent (`/a2a`).
pub const A2A_TASKS: TableDef = TableDef {
    name: "a2a_tasks",
    version: 1,
    doc: "One row per task of the Agent2Agent endpoint (`/a2a`): a message from another agent, answered through Ask CROW. Kept so any `crow serve` on the lake answers `GetTask`.",
    columns: &[
        req("org_id", Text, "Organization of the key that sent the message."),
        req("task_id", Text, "Task id (`tsk_` + 26 characters)."),
        req("context_id", Text, "Conversation the task belongs to (`ctx_` + 26 characters, or the caller's)."),
        req("key_id", Text, "The API key that sent the message."),
        req("state", Text, "'TASK_STATE_WORKING', 'TASK_STATE_INPUT_REQUIRED', 'TASK_STATE_COMPLETED', 'TASK_STATE_FAILED', 'TASK_STATE_REJECTED' or 'TASK_STATE_CANCELED'."),
        opt("question", Text, "The question asked (the text of the last user message)."),
        opt("sql", Text, "The query that answered it."),
        req("task", Text, "The whole task (status, history, artifacts) as A2A 1.0 JSON."),
        req("created_at", Timestamp, "When the task was created."),
        req("updated_at", Timestamp, "When it last changed."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `chats`: a signed-in user's conversations with Ask CROW.
pub const CHATS: TableDef = TableDef {
    name: "chats",
    version: 1,
    doc: "One row per chat: a signed-in user's conversation with Ask CROW (`/api/v1/chats`). Only its owner opens it through the API; through SQL only admins see it, like the audit log that records the same questions.",
    columns: &[
        req("org_id", Text, "The owner's organization."),
        req("chat_id", Text, "Chat id (`cht_` + 26 characters)."),
        req("user_id", Text, "The user who owns it; nobody else opens it through the API."),
        req("title", Text, "Its title: the first question (cut to 80 characters) until renamed."),
        req("message_count", Int64, "Messages in it (a question and its answer are two)."),
        req("created_at", Timestamp, "When it was created."),
        req("updated_at", Timestamp, "When it last changed (a message, a rename)."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `chat_messages`: the questions and answers of chats.
pub const CHAT_MESSAGES: TableDef = TableDef {
    name: "chat_messages",
    version: 1,
    doc: "One row per message of a chat: the user's question, or the assistant's answer to it with its SQL, a summary of its result (rows, columns, truncation), the rows shown, the answer in words, timing and tokens, or the error that stopped it.",
    columns: &[
        req("org_id", Text, "The chat owner's organization."),
        req("chat_id", Text, "The chat (`chats.chat_id`)."),
        req("message_id", Text, "Message id (`cmg_` + 26 characters)."),
        req("seq", Int64, "Its place in the chat: 1, 2, 3, … (a question, then its answer)."),
        req("role", Text, "'user' (a question) or 'assistant' (its answer)."),
        req("question", Text, "The question (on an answer: the question it answers)."),
        opt("sql", Text, "The query that answered it."),
        opt("row_count", Int64, "Rows the answer shows."),
        opt("columns", TextList, "The result's columns, in order."),
        opt("truncated", Bool, "Whether more rows existed than the answer shows."),
        opt("rows", Text, "The rows shown (at most 100), as JSON."),
        opt("chart", Text, "The suggested chart, as JSON."),
        opt("answer", Text, "The answer in words; every number in it appears in the rows."),
        opt("answer_source", Text, "'model' (the provider's checked words) or 'rows' (rendered from the rows)."),
        opt("provider", Text, "The AI provider that answered."),
        opt("model", Text, "Its model."),
        opt("input_tokens", Int64, "Prompt tokens spent (0 when the provider reports none)."),
        opt("output_tokens", Int64, "Completion tokens spent."),
        opt("duration_ms", Int64, "How long answering took, in milliseconds."),
        opt("error_code", Text, "Why there is no answer: the problem's code (e.g. `question_not_supported`)."),
        opt("error", Text, "The problem's detail."),
        req("created_at", Timestamp, "When it was written."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `social_sources`: what the social collector reads, per organization.
pub const SOCIAL_SOURCES: TableDef = TableDef {
    name: "social_sources",
    version: 1,
    doc: "One row per social source an organization collects from (a feed, a hashtag, a subreddit, a search): its kind, target and schedule, and how its last run went.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("source_id", Text, "Source id (`src_` + 26 characters)."),
        req("kind", Text, "'rss', 'mastodon', 'reddit', 'hackernews', 'youtube' or 'bluesky'."),
        req("target", Text, "What to read: a feed URL, `#tag` or `@account`, `r/sub` or a query, a channel or playlist id, `@handle` or a query."),
        req("enabled", Bool, "Whether scheduled and manual runs read it."),
        req("schedule", Text, "Cron expression (UTC) of its scheduled runs; 'off' for manual runs only."),
        req("created_at", Timestamp, "When it was added."),
        req("updated_at", Timestamp, "When it last changed."),
        opt("last_run_at", Timestamp, "When it was last read."),
        opt("last_run_id", Text, "The run (session) that last read it."),
        opt("last_status", Text, "'ok', 'partial' (some items skipped) or 'failed'."),
        opt("last_error", Text, "Why the last run failed or skipped items."),
        opt("last_captured", Int64, "Captures the last run landed from it."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `cameras`: the CCTV cameras an organization registered.
pub const CAMERAS: TableDef = TableDef {
    name: "cameras",
    version: 1,
    doc: "One row per CCTV camera an organization registered (`/api/v1/cameras`, the dashboard's Settings): the id its transcripts carry (`raw_cctv_transcripts.camera_id`), the store it is in, its name and where it looks. Registering a camera does not capture anything yet: the CCTV capture that reads this table comes in its own issue.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("camera_id", Text, "The camera's id, as its transcripts carry it (`raw_cctv_transcripts.camera_id`): 1 to 64 letters, digits, `-`, `_` or `.`, unique in the organization."),
        req("store_id", Text, "The store it is in, as its transcripts carry it (`raw_cctv_transcripts.store_id`): 1 to 64 letters, digits, `-`, `_` or `.`."),
        req("name", Text, "Its name, as people call it (1 to 200 characters)."),
        opt("location", Text, "Where it looks (an entrance, a till, an aisle), at most 200 characters."),
        req("created_at", Timestamp, "When it was registered."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `social_seen`: what the social collector has captured, for dedupe.
pub const SOCIAL_SEEN: TableDef = TableDef {
    name: "social_seen",
    version: 1,
    doc: "One row per version of a captured post or page: a link is captured once, and again (a new version linked to the first) only when its content changed.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("canonical_url", Text, "Canonical URL (lower-case scheme and host, no tracking parameters, fragment or trailing slash, redirectors unwrapped)."),
        req("content_hash", Text, "SHA-256 of the captured text."),
        req("capture_id", Text, "The capture of this version (`raw_social_captures.capture_id`)."),
        req("first_capture_id", Text, "The capture of the first version."),
        req("version", Int32, "1 for the first capture, then 2, 3, … for each edit."),
        req("run_id", Text, "The run that captured it."),
        req("seen_at", Timestamp, "When it was captured."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `saved_queries`: a signed-in user's named SQL queries.
pub const SAVED_QUERIES: TableDef = TableDef {
    name: "saved_queries",
    version: 1,
    doc: "One row per saved query: a signed-in user's named SQL, kept for the dashboard's SQL console (`/api/v1/saved-queries`). Only its owner lists, opens, changes or deletes it through the API; through SQL only admins see it, like chats.",
    columns: &[
        req("org_id", Text, "The owner's organization."),
        req("query_id", Text, "Saved query id (`sqy_` + 26 characters)."),
        req("user_id", Text, "The user who owns it; nobody else opens it through the API."),
        req("name", Text, "Its name (1 to 200 characters, unique among the owner's saved queries)."),
        req("sql", Text, "The query (at most 20,000 characters)."),
        req("created_at", Timestamp, "When it was saved."),
        req("updated_at", Timestamp, "When it last changed (a rename, new SQL)."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `query_history`: the SQL a signed-in user ran in the dashboard's console.
pub const QUERY_HISTORY: TableDef = TableDef {
    name: "query_history",
    version: 1,
    doc: "One row per distinct query a signed-in user ran in the dashboard's SQL console (`/api/v1/query-history`), so their history follows them to any browser. Running the same SQL again moves it to the top with that run's outcome (a failed run keeps its error); a user keeps the 50 most recent. Only its owner lists or clears it through the API; through SQL only admins see it, like saved queries.",
    columns: &[
        req("org_id", Text, "The owner's organization."),
        req("entry_id", Text, "History entry id (`qhe_` + 26 characters)."),
        req("user_id", Text, "The user who ran it; nobody else lists it through the API."),
        req("sql", Text, "The query as run (at most 20,000 characters)."),
        opt("error", Text, "Why its last run failed (at most 2,000 characters); null when it answered."),
        req("ran_at", Timestamp, "When the user last ran it."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// `embeddings`: vectors of products, interactions and social captures.
pub const EMBEDDINGS: TableDef = TableDef {
    name: "embeddings",
    version: 1,
    doc: "One row per embedded text of an entity (a product, an interaction, a social capture) and embedding model: the vector store behind semantic product matching and `GET /api/v1/search`. An entity whose text changed gets a new row (the latest `created_at` wins); one whose text did not is never embedded again.",
    columns: &[
        req("org_id", Text, "Organization."),
        req("entity_kind", Text, "'product', 'interaction' or 'social_capture'."),
        req("entity_id", Text, "`product_id`, `interaction_id` or `capture_id`."),
        req("provider", Text, "Embedding provider: 'offline', 'gemini' or 'openai'."),
        req("model", Text, "Embedding model."),
        req("dims", Int32, "Dimensions of `vector`."),
        req("vector", Float32List, "The embedding, L2-normalised (so a dot product is the cosine similarity)."),
        req("text_hash", Text, "SHA-256 of provider, model, dimensions and the embedded text: an unchanged entity is not embedded again."),
        opt("label", Text, "What search shows for it: the product's name, the interaction's description, the capture's text (at most 200 characters)."),
        req("created_at", Timestamp, "When it was embedded."),
    ],
    partition_by: &[],
    secret_columns: &[],
};

/// Every table, in creation order.
pub const ALL_TABLES: &[TableDef] = &[
    ORGANIZATIONS,
    API_KEYS,
    PRODUCTS,
    RAW_WEB_EVENTS,
    RAW_SOCIAL_CAPTURES,
    RAW_CCTV_TRANSCRIPTS,
    FAILED_EVENTS,
    SESSIONS,
    INTERACTIONS,
    PATTERNS,
    STORIES,
    DAILY_METRICS,
    USAGE_DAILY,
    JOB_RUNS,
    LLM_CACHE,
    USERS,
    USER_SESSIONS,
    USER_TOKENS,
    AUDIT_LOG,
    NOTIFICATIONS,
    A2A_TASKS,
    SOCIAL_SOURCES,
    SOCIAL_SEEN,
    CHATS,
    CHAT_MESSAGES,
    SAVED_QUERIES,
    QUERY_HISTORY,
    CAMERAS,
    EMBEDDINGS,
];

/// The table named `name`, if it is one of CROW's.
pub fn table(name: &str) -> Option<&'static TableDef> {
    ALL_TABLES.iter().find(|t| t.name == name)
}

/// Markdown reference of every table (the source of `docs/TABLES.md`).
pub fn tables_markdown() -> String {
    let mut out = String::from(
        "# CROW tables\n\nGenerated from `crow-schemas` (`cargo test -p crow-schemas` checks it is current).\n\
         Every table is a Delta table under the lake root, named as below. Timestamps are UTC microseconds.\n",
    );
    for t in ALL_TABLES {
        out.push_str(&format!(
            "\n## `{}` (schema v{})\n\n{}\n\n",
            t.name, t.version, t.doc
        ));
        if !t.partition_by.is_empty() {
            out.push_str(&format!(
                "Partitioned by `{}`.\n\n",
                t.partition_by.join("`, `")
            ));
        }
        out.push_str("| column | type | null | meaning |\n|---|---|---|---|\n");
        for c in t.columns {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                c.name,
                c.ty.doc_name(),
                if c.nullable { "yes" } else { "no" },
                c.doc.replace('|', "\\|")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(t: &TableDef, cols: &[&str]) {
        for c in cols {
            assert!(
                t.column(c).is_some(),
                "{} lacks contract column {c}",
                t.name
            );
        }
    }

    #[test]
    fn contract_columns_exist() {
        for t in ALL_TABLES {
            has(t, &["org_id"]);
            for p in t.partition_by {
                assert!(t.column(p).is_some(), "{}: partition column {p}", t.name);
            }
        }
        has(
            &RAW_WEB_EVENTS,
            &[
                "message_id",
                "type",
                "event",
                "anonymous_id",
                "user_id",
                "occurred_at",
                "received_at",
            ],
        );
        has(
            &SESSIONS,
            &["session_id", "channel", "started_at", "ended_at"],
        );
        has(
            &INTERACTIONS,
            &[
                "interaction_id",
                "session_id",
                "channel",
                "started_at",
                "ended_at",
                "description",
                "product_ids",
                "provider",
                "model",
            ],
        );
        has(
            &PATTERNS,
            &[
                "period_kind",
                "period_start",
                "period_end",
                "title",
                "description",
                "product_ids",
                "evidence",
            ],
        );
    }

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for t in ALL_TABLES {
            assert!(seen.insert(t.name));
            let mut cols = std::collections::HashSet::new();
            for c in t.columns {
                assert!(cols.insert(c.name), "{}.{} twice", t.name, c.name);
                assert!(c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'));
            }
        }
    }

    #[test]
    fn docs_tables_md_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TABLES.md");
        let current = std::fs::read_to_string(path).unwrap_or_default();
        let want = tables_markdown();
        if current != want {
            if std::env::var_os("CROWTEST_BLESS").is_some() {
                std::fs::write(path, want).expect("write docs/TABLES.md");
            } else {
                panic!(
                    "docs/TABLES.md is stale: run `CROWTEST_BLESS=1 cargo test -p crow-schemas`"
                );
            }
        }
    }
}
