//! Splitting every rule's series between replicas (`--shard.count`, `--shard.index`).
//!
//! A series belongs to shard `hash(labels) mod count`, where the hash is the first 8 bytes of
//! SHA-256 over its labels without `__name__` (`name 0xff value 0xff …`, in name order): the same
//! in every process, version and platform, so a series keeps its replica across restarts and
//! upgrades, and each series is scored by exactly one replica. A detector rule's series is
//! its join key (`on`, or every label but `__name__`), so that all its channels stay together.
//! Every replica still runs each rule's query and drops what is not its own.

use sha2::{Digest, Sha256};

use crate::source::Labels;

/// This replica's part of the series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

/// Shard flags that cannot work.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// No shards.
    #[error("--shard.count must be at least 1")]
    NoShards,
    /// An index past the count.
    #[error("--shard.index {index} must be below --shard.count {count}")]
    Index {
        /// The index.
        index: u64,
        /// The count.
        count: u64,
    },
    /// Neither a number nor a name ending in `-<number>`.
    #[error("--shard.index {0:?} is neither a number nor a name ending in -<number> (a StatefulSet pod name such as pulsewatch-2)")]
    Unparsable(String),
}

impl Shard {
    /// Every series: one replica, or sharding off.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// A count of 0 or an index not below it.
    pub fn new(index: u64, count: u64) -> Result<Self, ShardError> {
        match count {
            0 => Err(ShardError::NoShards),
            _ if index >= count => Err(ShardError::Index { index, count }),
            _ => Ok(Self { index, count }),
        }
    }

    /// The index as `--shard.index` takes it: a number, or a name ending in `-<number>`, as a
    /// StatefulSet names its pods (`pulsewatch-2` is shard 2).
    ///
    /// # Errors
    /// Neither.
    pub fn parse_index(text: &str) -> Result<u64, ShardError> {
        let digits = text.rsplit_once('-').map_or(text, |(_, n)| n);
        digits.parse().map_err(|_| ShardError::Unparsable(text.to_string()))
    }

    /// This shard's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether the series of `labels` (`__name__` is ignored) is this shard's.
    pub fn owns(&self, labels: &Labels) -> bool {
        self.count == 1 || hash(labels) % self.count == self.index
    }
}

/// The series hash: the first 8 bytes, big-endian, of SHA-256 over `name 0xff value 0xff` for
/// every label but `__name__`, in name order. 0xff never occurs in UTF-8, so no two label sets
/// hash the same bytes.
fn hash(labels: &Labels) -> u64 {
    let mut sha = Sha256::new();
    for (name, value) in labels.iter().filter(|(name, _)| name.as_str() != "__name__") {
        sha.update(name.as_bytes());
        sha.update([0xff]);
        sha.update(value.as_bytes());
        sha.update([0xff]);
    }
    let digest = sha.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The hash is part of the contract (a series' replica must not move on an upgrade): these
    /// values were computed outside pulsewatch, with Python's hashlib, over the documented bytes
    /// (`hashlib.sha256(b"instance\xffa:9100\xffjob\xffnode\xff").digest()[:8]`).
    #[test]
    fn the_hash_is_sha256_of_the_documented_bytes() {
        assert_eq!(hash(&labels(&[("instance", "a:9100"), ("job", "node")])), 0xd88f_9797_4258_afe6);
        assert_eq!(hash(&labels(&[("__name__", "up"), ("instance", "a:9100"), ("job", "node")])), 0xd88f_9797_4258_afe6);
        assert_eq!(hash(&Labels::new()), 0xe3b0_c442_98fc_1c14, "SHA-256 of nothing");
    }

    #[test]
    fn every_series_has_exactly_one_shard_and_they_share_the_work() {
        let count = 3;
        let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
        let mut sizes = [0usize; 3];
        for i in 0..3000 {
            let series = labels(&[("instance", &format!("host-{i}:9100")), ("job", "node")]);
            let owners: Vec<usize> = (0..3).filter(|&s| shards[s].owns(&series)).collect();
            assert_eq!(owners.len(), 1, "{series:?}");
            sizes[owners[0]] += 1;
            assert!(Shard::ALL.owns(&series));
        }
        // 1,000 expected each; a binomial's standard deviation is about 26.
        assert!(sizes.iter().all(|&n| (880..=1120).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn flags_are_checked_and_pod_names_give_the_index() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(Shard::new(3, 3), Err(ShardError::Index { index: 3, count: 3 }));
        assert_eq!(Shard::parse_index("2"), Ok(2));
        assert_eq!(Shard::parse_index("pulsewatch-12"), Ok(12));
        assert_eq!(Shard::parse_index("pulsewatch-shard-a-0"), Ok(0));
        assert_eq!(Shard::parse_index("pulsewatch"), Err(ShardError::Unparsable("pulsewatch".into())));
        assert_eq!(Shard::parse_index("web-"), Err(ShardError::Unparsable("web-".into())));
    }
}
