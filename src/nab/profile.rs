//! NAB's application profiles (`config/profiles.json`): the weights of the cost matrix.

/// A NAB application profile: how much detections and misses weigh.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// The name NAB gives it, e.g. `"standard"`.
    pub name: &'static str,
    /// Weight of a window's detection at its first row (later detections earn less).
    pub tp_weight: f64,
    /// Weight of a false positive far from any window (closer ones cost less).
    pub fp_weight: f64,
    /// Cost of a window with no detection.
    pub fn_weight: f64,
    /// Listed by NAB, but no part of its score.
    pub tn_weight: f64,
}

impl Profile {
    /// NAB's `standard` profile.
    pub const STANDARD: Profile = Profile { name: "standard", tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0, tn_weight: 1.0 };
    /// NAB's `reward_low_FP_rate` profile: false positives cost twice as much.
    pub const REWARD_LOW_FP_RATE: Profile =
        Profile { name: "reward_low_FP_rate", tp_weight: 1.0, fp_weight: 0.22, fn_weight: 1.0, tn_weight: 1.0 };
    /// NAB's `reward_low_FN_rate` profile: missed windows cost twice as much.
    pub const REWARD_LOW_FN_RATE: Profile =
        Profile { name: "reward_low_FN_rate", tp_weight: 1.0, fp_weight: 0.11, fn_weight: 2.0, tn_weight: 1.0 };
    /// The three profiles NAB reports, in the order of its `profiles.json`.
    pub const ALL: [Profile; 3] = [Profile::STANDARD, Profile::REWARD_LOW_FP_RATE, Profile::REWARD_LOW_FN_RATE];
}
