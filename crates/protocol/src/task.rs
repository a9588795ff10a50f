//! The agent's task fields, with Bytebot's names and spellings (`PENDING`, `URGENT`, …) so
//! its UI and scripts read ours unchanged.

use serde::{Deserialize, Serialize};

/// Declares an enum spelled in SCREAMING_CASE on the wire, with `as_str`, `parse` and `ALL`.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the wire spelling (case-insensitive); the error lists what is allowed.
            pub fn parse(text: &str) -> Result<Self, String> {
                $(if text.eq_ignore_ascii_case($text) {
                    return Ok($name::$variant);
                })+
                Err(format!(
                    "\"{text}\" is not one of {}",
                    [$($text),+].join(", ")
                ))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Where a task is in its life.
    TaskStatus {
        /// Waiting in the queue (or for its scheduled time).
        Pending = "PENDING",
        /// A worker holds its lease and runs it.
        Running = "RUNNING",
        /// The agent stopped and asks a person for help.
        NeedsHelp = "NEEDS_HELP",
        /// Done by the agent; a person should check the result.
        NeedsReview = "NEEDS_REVIEW",
        /// Finished successfully.
        Completed = "COMPLETED",
        /// Stopped by a person.
        Cancelled = "CANCELLED",
        /// Failed for good.
        Failed = "FAILED",
    }
);

impl TaskStatus {
    /// True for the states a task never leaves on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Cancelled | TaskStatus::Failed
        )
    }
}

wire_enum!(
    /// How urgent a task is; the queue takes higher priorities first.
    Priority {
        /// After everything else.
        Low = "LOW",
        /// The default.
        Medium = "MEDIUM",
        /// Before medium.
        High = "HIGH",
        /// First.
        Urgent = "URGENT",
    }
);

impl Priority {
    /// Sort rank: higher runs first.
    pub fn rank(self) -> i32 {
        match self {
            Priority::Low => 0,
            Priority::Medium => 1,
            Priority::High => 2,
            Priority::Urgent => 3,
        }
    }

    /// The priority of a rank (clamped).
    pub fn from_rank(rank: i64) -> Priority {
        match rank {
            i64::MIN..=0 => Priority::Low,
            1 => Priority::Medium,
            2 => Priority::High,
            _ => Priority::Urgent,
        }
    }
}

wire_enum!(
    /// When a task may start.
    TaskType {
        /// As soon as a worker is free.
        Immediate = "IMMEDIATE",
        /// Not before its scheduled time.
        Scheduled = "SCHEDULED",
    }
);

wire_enum!(
    /// Who drives the desktop of a task right now.
    Control {
        /// A person took over; the agent waits.
        User = "USER",
        /// The agent.
        Assistant = "ASSISTANT",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Ok(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        assert_eq!(Priority::parse("urgent"), Ok(Priority::Urgent));
        assert_eq!(
            TaskType::parse("later"),
            Err("\"later\" is not one of IMMEDIATE, SCHEDULED".to_string())
        );
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(i64::from(p.rank())), *p);
        }
    }
}
