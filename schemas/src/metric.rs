//! The patterns job's metric identities, one enum for every kind.
//!
//! A metric is stored as text in `patterns.metric` (and keys the daily
//! series of `/api/v1/insights/days`): `sessions`, `funnel:view>cart`,
//! `error_at:Payment Failed@checkout`, `transition:a>b`, … . [`Metric`]'s
//! `Display` writes exactly that text and `FromStr` reads it back, so the
//! job and the API read the same names; code matches on the variants.
//!
//! Names inside a metric (events, steps, products) are free text: a
//! `>`, `@` or `|` in them still round-trips the text, and is split as the
//! job always has (the first `>` of a funnel or transition, the last `@` of
//! an `error_at`, the first `|` of a pair).

use std::fmt;
use std::str::FromStr;

/// One metric of the patterns job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// `sessions`: sessions (a count).
    Sessions,
    /// `visitors`: distinct visitors (a count).
    Visitors,
    /// `error_sessions`: the share of sessions with a failure.
    ErrorSessions,
    /// `orders`: sessions with an order (a count).
    Orders,
    /// `revenue`: the orders' revenue (its sum and how many carried one).
    Revenue,
    /// `revenue_sq`: the squares of the orders' revenue (for the spread).
    RevenueSq,
    /// `funnel:<from>>` `<to>`: conversion from one funnel step to another.
    Funnel {
        /// The step the sessions reached (`view`, `cart`, …).
        from: String,
        /// The step they went on to.
        to: String,
    },
    /// `error_at:<event>@<step>`: sessions with a failing event at a step.
    ErrorAt {
        /// The failing event's name.
        event: String,
        /// The funnel step it occurred at (`start` before any).
        step: String,
    },
    /// `event:<kind>`: sessions with an event of this kind.
    Event(String),
    /// `error:<event>`: sessions with this failing event.
    Error(String),
    /// `transition:<from>>` `<to>`: how often `from` is followed by `to`.
    Transition {
        /// The earlier event.
        from: String,
        /// The event that followed it.
        to: String,
    },
    /// `transitions_from:<event>`: every transition out of an event (the
    /// base of its transitions' rates).
    TransitionsFrom(String),
    /// `loop:<event>`: sessions repeating an event three or more times.
    Loop(String),
    /// `product_views:<product>`: sessions viewing a product.
    ProductViews(String),
    /// `product_conversion:<product>`: the share of its viewers who bought.
    ProductConversion(String),
    /// `bought:<product>`: sessions buying a product.
    Bought(String),
    /// `pair:<a>|<b>`: sessions buying both products (`a < b`).
    Pair(String, String),
}

/// Text that names no metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMetric(pub String);

impl fmt::Display for UnknownMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a metric", self.0)
    }
}

impl std::error::Error for UnknownMetric {}

impl Metric {
    /// The metric's family, as stored before the name: `funnel:`,
    /// `error_at:`, … (the whole name for the plain metrics).
    pub fn family(&self) -> &'static str {
        match self {
            Metric::Sessions => "sessions",
            Metric::Visitors => "visitors",
            Metric::ErrorSessions => "error_sessions",
            Metric::Orders => "orders",
            Metric::Revenue => "revenue",
            Metric::RevenueSq => "revenue_sq",
            Metric::Funnel { .. } => "funnel:",
            Metric::ErrorAt { .. } => "error_at:",
            Metric::Event(_) => "event:",
            Metric::Error(_) => "error:",
            Metric::Transition { .. } => "transition:",
            Metric::TransitionsFrom(_) => "transitions_from:",
            Metric::Loop(_) => "loop:",
            Metric::ProductViews(_) => "product_views:",
            Metric::ProductConversion(_) => "product_conversion:",
            Metric::Bought(_) => "bought:",
            Metric::Pair(..) => "pair:",
        }
    }

    /// The plain metric named `name`, if it is one.
    fn plain(name: &str) -> Option<Metric> {
        Some(match name {
            "sessions" => Metric::Sessions,
            "visitors" => Metric::Visitors,
            "error_sessions" => Metric::ErrorSessions,
            "orders" => Metric::Orders,
            "revenue" => Metric::Revenue,
            "revenue_sq" => Metric::RevenueSq,
            _ => return None,
        })
    }

    /// The metric of family `family` (with its colon) and name `rest`.
    fn named(family: &str, rest: &str) -> Option<Metric> {
        let s = |v: &str| v.to_string();
        Some(match family {
            "funnel:" => {
                let (from, to) = rest.split_once('>')?;
                Metric::Funnel {
                    from: s(from),
                    to: s(to),
                }
            }
            "error_at:" => {
                let (event, step) = rest.rsplit_once('@')?;
                Metric::ErrorAt {
                    event: s(event),
                    step: s(step),
                }
            }
            "transition:" => {
                let (from, to) = rest.split_once('>')?;
                Metric::Transition {
                    from: s(from),
                    to: s(to),
                }
            }
            "pair:" => {
                let (a, b) = rest.split_once('|')?;
                Metric::Pair(s(a), s(b))
            }
            "event:" => Metric::Event(s(rest)),
            "error:" => Metric::Error(s(rest)),
            "transitions_from:" => Metric::TransitionsFrom(s(rest)),
            "loop:" => Metric::Loop(s(rest)),
            "product_views:" => Metric::ProductViews(s(rest)),
            "product_conversion:" => Metric::ProductConversion(s(rest)),
            "bought:" => Metric::Bought(s(rest)),
            _ => return None,
        })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = self.family();
        match self {
            Metric::Funnel { from, to } | Metric::Transition { from, to } => {
                write!(f, "{family}{from}>{to}")
            }
            Metric::ErrorAt { event, step } => write!(f, "{family}{event}@{step}"),
            Metric::Pair(a, b) => write!(f, "{family}{a}|{b}"),
            Metric::Event(k)
            | Metric::Error(k)
            | Metric::TransitionsFrom(k)
            | Metric::Loop(k)
            | Metric::ProductViews(k)
            | Metric::ProductConversion(k)
            | Metric::Bought(k) => write!(f, "{family}{k}"),
            _ => f.write_str(family),
        }
    }
}

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = match text.find(':') {
            None => Metric::plain(text),
            Some(i) => Metric::named(&text[..=i], &text[i + 1..]),
        };
        parsed.ok_or_else(|| UnknownMetric(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One metric of every kind, with the text stored for it.
    fn every_kind() -> Vec<(Metric, &'static str)> {
        let s = |v: &str| v.to_string();
        vec![
            (Metric::Sessions, "sessions"),
            (Metric::Visitors, "visitors"),
            (Metric::ErrorSessions, "error_sessions"),
            (Metric::Orders, "orders"),
            (Metric::Revenue, "revenue"),
            (Metric::RevenueSq, "revenue_sq"),
            (
                Metric::Funnel {
                    from: s("view"),
                    to: s("cart"),
                },
                "funnel:view>cart",
            ),
            (
                Metric::ErrorAt {
                    event: s("Payment Failed"),
                    step: s("checkout"),
                },
                "error_at:Payment Failed@checkout",
            ),
            (Metric::Event(s("Product Viewed")), "event:Product Viewed"),
            (Metric::Error(s("Payment Failed")), "error:Payment Failed"),
            (
                Metric::Transition {
                    from: s("Product Viewed"),
                    to: s("Product Added"),
                },
                "transition:Product Viewed>Product Added",
            ),
            (
                Metric::TransitionsFrom(s("Product Viewed")),
                "transitions_from:Product Viewed",
            ),
            (Metric::Loop(s("Coupon Denied")), "loop:Coupon Denied"),
            (Metric::ProductViews(s("p-1")), "product_views:p-1"),
            (
                Metric::ProductConversion(s("p-1")),
                "product_conversion:p-1",
            ),
            (Metric::Bought(s("p-1")), "bought:p-1"),
            (Metric::Pair(s("p-1"), s("p-2")), "pair:p-1|p-2"),
        ]
    }

    #[test]
    fn every_kind_round_trips_its_stored_text() {
        for (metric, text) in every_kind() {
            assert_eq!(metric.to_string(), text);
            assert_eq!(text.parse::<Metric>(), Ok(metric.clone()), "{text}");
            assert!(text.starts_with(metric.family()), "{text}");
        }
    }

    #[test]
    fn names_with_separators_split_as_the_job_always_has() {
        for text in [
            "transition:a>b>c",
            "error_at:Failed @ once@cart",
            "event:a:b",
            "pair:a|b|c",
            "funnel:view>order",
            "error:",
        ] {
            let m: Metric = text.parse().expect(text);
            assert_eq!(m.to_string(), text);
        }
        let m: Metric = "error_at:Failed @ once@cart".parse().expect("error_at");
        assert_eq!(
            m,
            Metric::ErrorAt {
                event: "Failed @ once".into(),
                step: "cart".into()
            }
        );
        let m: Metric = "transition:a>b>c".parse().expect("transition");
        assert_eq!(
            m,
            Metric::Transition {
                from: "a".into(),
                to: "b>c".into()
            }
        );
    }

    #[test]
    fn unknown_or_incomplete_names_are_errors() {
        for text in [
            "",
            "session",
            "nope:x",
            "funnel:view",
            "error_at:x",
            "pair:a",
        ] {
            assert_eq!(
                text.parse::<Metric>(),
                Err(UnknownMetric(text.to_string())),
                "{text}"
            );
        }
    }
}
