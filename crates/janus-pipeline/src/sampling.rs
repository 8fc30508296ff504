//! Token sampling on the host from f32 logits: greedy, or temperature with
//! optional top-k and top-p (HF warper order), from a seeded RNG; optional
//! frequency and presence penalties (OpenAI's) on the tokens picked so far.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{PipelineError, Result};

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep the `k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Nucleus sampling threshold; `1.0` disables.
    pub top_p: f32,
    /// RNG seed.
    pub seed: u64,
    /// Subtracted from a token's logit once per time this sampler picked it
    /// (OpenAI's `frequency_penalty`, -2 to 2); `0` disables.
    pub frequency_penalty: f32,
    /// Subtracted from the logit of every token this sampler picked before
    /// (OpenAI's `presence_penalty`, -2 to 2); `0` disables.
    pub presence_penalty: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

/// Refuses a sampling temperature that is negative or not finite (0 is
/// greedy).
pub(crate) fn check_temperature(temperature: f32) -> Result<()> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(PipelineError::Invalid(format!(
            "temperature must be finite and >= 0, got {temperature}"
        )));
    }
    Ok(())
}

impl SamplingConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        check_temperature(self.temperature)?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(PipelineError::Invalid(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        for (name, value) in [
            ("frequency penalty", self.frequency_penalty),
            ("presence penalty", self.presence_penalty),
        ] {
            if !(-MAX_PENALTY..=MAX_PENALTY).contains(&value) {
                return Err(PipelineError::Invalid(format!(
                    "{name} must be in [-{MAX_PENALTY}, {MAX_PENALTY}], got {value}"
                )));
            }
        }
        Ok(())
    }
}

/// The largest frequency or presence penalty (OpenAI's range).
pub const MAX_PENALTY: f32 = 2.0;

/// A seeded sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
    /// How often each token was picked, kept while a penalty is set.
    picked: HashMap<usize, u32>,
}

/// Index of the largest value, first on ties (`torch.argmax`).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best
}

impl Sampler {
    /// A sampler; fails on out-of-range settings.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            picked: HashMap::new(),
        })
    }

    /// Whether this sampler is greedy.
    pub fn is_greedy(&self) -> bool {
        self.config.temperature == 0.0
    }

    /// Picks one index from `logits` (less the penalties of the tokens
    /// picked before).
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        let (frequency, presence) = (self.config.frequency_penalty, self.config.presence_penalty);
        if frequency == 0.0 && presence == 0.0 {
            return self.pick(logits);
        }
        let picked = if self.picked.is_empty() {
            self.pick(logits)
        } else {
            let mut penalized = logits.to_vec();
            for (&token, &count) in &self.picked {
                if let Some(l) = penalized.get_mut(token) {
                    *l -= count as f32 * frequency + presence;
                }
            }
            self.pick(&penalized)
        };
        *self.picked.entry(picked).or_insert(0) += 1;
        picked
    }

    fn pick(&mut self, logits: &[f32]) -> usize {
        if self.is_greedy() {
            return argmax(logits);
        }
        // (l - max) / t in f64: a tiny temperature sends every logit but the
        // largest to -inf (probability 0) instead of overflowing to inf - inf.
        let t = self.config.temperature as f64;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut cand: Vec<(usize, f64)> = logits
            .iter()
            .map(|l| (*l as f64 - max) / t)
            .enumerate()
            .collect();
        let k = self.config.top_k;
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        let mut probs: Vec<(usize, f64)> = cand.iter().map(|(i, l)| (*i, l.exp())).collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.iter_mut().for_each(|p| p.1 /= total);
        if self.config.top_p < 1.0 {
            probs.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                cum += p.1;
                if cum >= self.config.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep.max(1));
            let total: f64 = probs.iter().map(|p| p.1).sum();
            probs.iter_mut().for_each(|p| p.1 /= total);
        }
        let mut u: f64 = self.rng.random();
        for (i, p) in &probs {
            if u < *p {
                return *i;
            }
            u -= p;
        }
        probs.last().map_or(0, |p| p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_temperatures_pick_the_greedy_token() {
        let mut logits: Vec<f32> = (0..512).map(|i| ((i * 37) % 101) as f32 * 0.01).collect();
        logits[123] = 1.5;
        let greedy = argmax(&logits);
        assert_eq!(greedy, 123);
        for t in [1e-40f32, 1e-30, 1e-12, 1e-6] {
            let mut s = Sampler::new(SamplingConfig {
                temperature: t,
                top_k: 0,
                top_p: 1.0,
                seed: 3,
                ..Default::default()
            })
            .unwrap();
            for _ in 0..20 {
                assert_eq!(s.sample(&logits), greedy, "temperature {t}");
            }
        }
    }

    fn cfg(temperature: f32, top_k: usize, top_p: f32) -> SamplingConfig {
        SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed: 7,
            ..Default::default()
        }
    }

    #[test]
    fn zero_temperature_is_argmax_first_on_ties() {
        let mut s = Sampler::new(cfg(0.0, 0, 1.0)).unwrap();
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_argmax() {
        let mut s = Sampler::new(cfg(1.0, 1, 1.0)).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 2.0, 1.9, 0.0]), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.8 keeps the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(cfg(1.0, 0, 0.8)).unwrap();
        let picks: Vec<usize> = (0..200).map(|_| s.sample(&logits)).collect();
        assert!(picks.iter().all(|p| *p < 2));
        assert!(picks.contains(&0) && picks.contains(&1));
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = || {
            let mut s = Sampler::new(cfg(1.0, 0, 1.0)).unwrap();
            (0..10).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn penalties_count_the_picked_tokens() {
        // Greedy: token 0 leads by 1.5. A frequency penalty of 0.6 costs it
        // 0.6 per pick: after three it is at 0.7, under tokens 1 (1.0) and
        // 2 (0.9), which then fall under it. A presence penalty of 2 takes
        // 2 once from each picked token: 0, 1, 2, then 0 (0.5) for good.
        let logits = [2.5f32, 1.0, 0.9, -5.0];
        let picks = |frequency, presence| {
            let mut s = Sampler::new(SamplingConfig {
                frequency_penalty: frequency,
                presence_penalty: presence,
                ..cfg(0.0, 0, 1.0)
            })
            .unwrap();
            (0..6).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(picks(0.0, 0.0), [0; 6]);
        assert_eq!(picks(0.6, 0.0), [0, 0, 0, 1, 2, 0]);
        assert_eq!(picks(0.0, 2.0), [0, 1, 2, 0, 0, 0]);
        // A negative penalty favours repeats.
        assert_eq!(picks(-1.0, -1.0), [0; 6]);
    }

    #[test]
    fn bad_settings_are_errors() {
        for (frequency, presence) in [(2.5, 0.0), (0.0, -2.1), (f32::NAN, 0.0)] {
            let config = SamplingConfig {
                frequency_penalty: frequency,
                presence_penalty: presence,
                ..Default::default()
            };
            assert!(Sampler::new(config).is_err());
        }
        assert!(Sampler::new(cfg(-1.0, 0, 1.0)).is_err());
        assert!(Sampler::new(cfg(1.0, 0, 0.0)).is_err());
        assert!(Sampler::new(cfg(f32::NAN, 0, 1.0)).is_err());
    }
}
