//! Ensemble decoding: several models over one vocabulary searched as one.
//!
//! The next-token distribution of an ensemble is the mean of its members' distributions (a
//! mixture, as OpenNMT-py and Marian ensemble), so every strategy — greedy, sampling, beam — works
//! on it unchanged: [`Ensemble`] is just another [`Stepper`]. Members may differ in anything but
//! the target vocabulary: checkpoints of one run (a checkpoint ensemble), or separately trained
//! models, each with its own encoder and state.

use candle_core::{Result, Tensor, D};

use crate::Stepper;

/// Several [`Stepper`]s with the same vocabulary, stepped in lockstep. Its "logits" are the log of
/// the mean of the members' probabilities: already normalised, which the strategies' own
/// `log_softmax` leaves unchanged. Its attention is the mean of the members' (each member's
/// memory positions first put in the shared order, where one is set).
pub struct Ensemble<S> {
    members: Vec<S>,
    orders: Vec<Option<Tensor>>,
}

impl<S: Stepper> Ensemble<S> {
    /// An ensemble of `members` (at least one; all with the same vocabulary size).
    pub fn new(members: Vec<S>) -> Result<Self> {
        let Some(first) = members.first() else {
            candle_core::bail!("an ensemble needs at least one member")
        };
        let v = first.vocab_size();
        if let Some((i, m)) = members
            .iter()
            .enumerate()
            .find(|(_, m)| m.vocab_size() != v)
        {
            candle_core::bail!(
                "ensemble member {i} has {} output tokens, member 0 has {v}: members must share \
                 one target vocabulary",
                m.vocab_size()
            )
        }
        let orders = vec![None; members.len()];
        Ok(Self { members, orders })
    }

    pub fn members(&self) -> &[S] {
        &self.members
    }

    /// Maps member `i`'s memory positions onto the shared ones: shared position `j` is the
    /// member's position `order[j]` (u32). For an image read mirrored, say, this flips its
    /// attention back before the members' attention is averaged.
    pub fn set_attention_order(&mut self, i: usize, order: Tensor) {
        self.orders[i] = Some(order);
    }
}

impl<S: Stepper> Stepper for Ensemble<S> {
    /// One state per member, in member order.
    type State = Vec<S::State>;

    fn step(&self, prev: &Tensor, states: &Vec<S::State>) -> Result<(Tensor, Vec<S::State>)> {
        if states.len() != self.members.len() {
            candle_core::bail!(
                "ensemble of {} members stepped with {} states",
                self.members.len(),
                states.len()
            )
        }
        if let [single] = self.members.as_slice() {
            // One member: its own logits, bit for bit the same search as without an ensemble.
            let (logits, next) = single.step(prev, &states[0])?;
            return Ok((logits, vec![next]));
        }
        let mut log_probs = Vec::with_capacity(self.members.len());
        let mut next = Vec::with_capacity(self.members.len());
        for (m, s) in self.members.iter().zip(states) {
            let (logits, n) = m.step(prev, s)?;
            log_probs.push(candle_nn::ops::log_softmax(&logits, D::Minus1)?);
            next.push(n);
        }
        // log((1/K) Σ_k p_k) = logsumexp_k(log p_k) − log K, stable for very unlikely tokens.
        let k = self.members.len() as f64;
        let mixture = (Tensor::stack(&log_probs, 0)?.log_sum_exp(0)? - k.ln())?;
        Ok((mixture, next))
    }

    fn select(&self, states: &Vec<S::State>, rows: &Tensor) -> Result<Vec<S::State>> {
        self.members
            .iter()
            .zip(states)
            .map(|(m, s)| m.select(s, rows))
            .collect()
    }

    fn vocab_size(&self) -> usize {
        self.members[0].vocab_size()
    }

    fn attention(&self, states: &Vec<S::State>) -> Result<Option<Tensor>> {
        let mut sum: Option<Tensor> = None;
        let mut n = 0usize;
        for ((m, s), order) in self.members.iter().zip(states).zip(&self.orders) {
            let Some(a) = m.attention(s)? else { continue };
            let a = match order {
                Some(o) => a.index_select(o, 1)?,
                None => a,
            };
            sum = Some(match sum {
                None => a,
                Some(x) => (x + a)?,
            });
            n += 1;
        }
        sum.map(|s| s / n as f64).transpose()
    }
}
