//! Attention over an encoder memory: additive (Bahdanau), multiplicative (Luong `general`, `dot`),
//! masked over source padding.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{linear_no_bias, Linear, Module, VarBuilder};

use crate::additive::additive_score;
use crate::cpu::on_cpu_f32;

/// Which score function compares a decoder query with the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// `vᵀ tanh(W_k m + W_q q)` (Bahdanau et al., 2015).
    Bahdanau,
    /// `qᵀ W m` (Luong et al., 2015, "general").
    Luong,
    /// `qᵀ m` (Luong "dot"): the memory and query sizes must agree.
    Dot,
}

/// An attention layer; parameters `key_layer`, `query_layer`, `energy_layer` (JoeyNMT's names).
#[derive(Clone, Debug)]
pub struct Attention {
    kind: AttentionKind,
    key_layer: Option<Linear>,
    query_layer: Option<Linear>,
    energy_layer: Option<Linear>,
}

/// The memory with everything that does not depend on the query precomputed once per source.
#[derive(Clone, Debug)]
pub struct AttentionKeys {
    memory: Tensor,
    keys: Tensor,
    /// 0 at real positions, -1e9 at padding, shaped (B, 1, S) to broadcast over queries.
    mask_bias: Tensor,
}

impl AttentionKeys {
    pub fn memory(&self) -> &Tensor {
        &self.memory
    }

    pub(crate) fn keys(&self) -> &Tensor {
        &self.keys
    }

    pub(crate) fn mask_bias(&self) -> &Tensor {
        &self.mask_bias
    }

    /// Keeps only the given batch rows (beam search and finished-row pruning use this).
    pub fn index_select(&self, rows: &Tensor) -> Result<Self> {
        Ok(Self {
            memory: self.memory.index_select(rows, 0)?,
            keys: self.keys.index_select(rows, 0)?,
            mask_bias: self.mask_bias.index_select(rows, 0)?,
        })
    }

    /// Memory positions `S`.
    pub fn len(&self) -> Result<usize> {
        self.memory.dim(1)
    }

    /// Whether the memory has no position.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The batches of `parts` one after the other (continuous batching: rows that join a
    /// running search). Shorter memories are padded to the longest with masked positions, whose
    /// attention weight is exactly 0, so each row attends as it did alone.
    pub fn cat(parts: &[&AttentionKeys]) -> Result<Self> {
        let mut s = 0;
        for p in parts {
            s = s.max(p.len()?);
        }
        let pad = |t: &Tensor, dim: usize, value: f64| -> Result<Tensor> {
            let extra = s - t.dim(dim)?;
            if extra == 0 {
                return Ok(t.clone());
            }
            let mut shape = t.dims().to_vec();
            shape[dim] = extra;
            let fill = (Tensor::zeros(shape, t.dtype(), t.device())? + value)?;
            Tensor::cat(&[t, &fill], dim)
        };
        let cat = |f: &dyn Fn(&AttentionKeys) -> Result<Tensor>| -> Result<Tensor> {
            let ts = parts.iter().map(|p| f(p)).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&ts, 0)
        };
        Ok(Self {
            memory: cat(&|p| pad(&p.memory, 1, 0.0))?,
            keys: cat(&|p| pad(&p.keys, 1, 0.0))?,
            mask_bias: cat(&|p| pad(&p.mask_bias, 2, -1e9))?,
        })
    }

    /// The first `len` memory positions (padding that no row needs any more dropped).
    pub fn narrow(&self, len: usize) -> Result<Self> {
        // Contiguous again: rows are selected from it later (`index_select` needs that).
        Ok(Self {
            memory: self.memory.narrow(1, 0, len)?.contiguous()?,
            keys: self.keys.narrow(1, 0, len)?.contiguous()?,
            mask_bias: self.mask_bias.narrow(2, 0, len)?.contiguous()?,
        })
    }
}

/// `memory_dim`: C of the memory (B, S, C); `query_dim`: size of the decoder query;
/// `attention_dim`: the hidden size of the additive score (ignored by the multiplicative ones).
pub fn attention(
    kind: AttentionKind,
    memory_dim: usize,
    query_dim: usize,
    attention_dim: usize,
    vb: VarBuilder,
) -> Result<Attention> {
    let (key_layer, query_layer, energy_layer) = match kind {
        AttentionKind::Bahdanau => (
            Some(linear_no_bias(
                memory_dim,
                attention_dim,
                vb.pp("key_layer"),
            )?),
            Some(linear_no_bias(
                query_dim,
                attention_dim,
                vb.pp("query_layer"),
            )?),
            Some(linear_no_bias(attention_dim, 1, vb.pp("energy_layer"))?),
        ),
        AttentionKind::Luong => (
            Some(linear_no_bias(memory_dim, query_dim, vb.pp("key_layer"))?),
            None,
            None,
        ),
        AttentionKind::Dot => {
            if memory_dim != query_dim {
                candle_core::bail!(
                    "dot attention needs equal memory and query sizes, got {memory_dim} and {query_dim}"
                );
            }
            (None, None, None)
        }
    };
    Ok(Attention {
        kind,
        key_layer,
        query_layer,
        energy_layer,
    })
}

impl Attention {
    pub fn kind(&self) -> AttentionKind {
        self.kind
    }

    /// The additive score's query weight `W_q` `(A, H)` and energy weight `v` `(1, A)`.
    pub(crate) fn additive_weights(&self) -> Option<(&Tensor, &Tensor)> {
        match (self.kind, &self.query_layer, &self.energy_layer) {
            (AttentionKind::Bahdanau, Some(q), Some(e)) => Some((q.weight(), e.weight())),
            _ => None,
        }
    }

    /// Precomputes the keys for `memory` (B, S, C) with `mask` (B, S) (1 = real token).
    pub fn keys(&self, memory: &Tensor, mask: &Tensor) -> Result<AttentionKeys> {
        let keys = match &self.key_layer {
            Some(l) => l.forward(memory)?,
            None => memory.clone(),
        };
        let mask_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.unsqueeze(1)?;
        Ok(AttentionKeys {
            memory: memory.clone(),
            keys,
            mask_bias,
        })
    }

    /// Attends with `query` (B, Tq, Hq); returns the context (B, Tq, C) and weights (B, Tq, S).
    /// Several queries at once serve the teacher-forced training path; decoding passes Tq = 1.
    pub fn forward(&self, query: &Tensor, k: &AttentionKeys) -> Result<(Tensor, Tensor)> {
        let scores = match self.kind {
            AttentionKind::Bahdanau => {
                let q = self.query_layer.as_ref().unwrap().forward(query)?; // (B, Tq, A)
                let energy = self.energy_layer.as_ref().unwrap();
                if on_cpu_f32(&q) {
                    additive_score(&q, &k.keys, energy.weight())?
                } else {
                    let e = q
                        .unsqueeze(2)?
                        .broadcast_add(&k.keys.unsqueeze(1)?)?
                        .tanh()?; // (B,Tq,S,A)
                    energy.forward(&e)?.squeeze(D::Minus1)?
                }
            }
            AttentionKind::Luong | AttentionKind::Dot => query
                .contiguous()?
                .matmul(&k.keys.transpose(1, 2)?.contiguous()?)?,
        };
        let scores = scores.broadcast_add(&k.mask_bias)?;
        let alphas = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = alphas.matmul(&k.memory.contiguous()?)?;
        Ok((context, alphas))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::SeededVarMap;
    use candle_core::Device;

    /// Keys of two batches joined (the shorter memory padded), then rows selected and the padding
    /// trimmed, attend for each row as its own batch's keys do: continuous batching's contract.
    #[test]
    fn joined_padded_and_trimmed_keys_attend_as_alone() -> Result<()> {
        let dev = Device::Cpu;
        let rand = |shape: (usize, usize, usize)| Tensor::randn(0f32, 1.0, shape, &dev);
        for kind in [
            AttentionKind::Bahdanau,
            AttentionKind::Luong,
            AttentionKind::Dot,
        ] {
            let vm = SeededVarMap::new(4);
            let att = attention(kind, 4, 4, 3, vm.var_builder(&dev))?;
            let (ma, mb) = (rand((2, 5, 4))?, rand((1, 2, 4))?);
            let ka = att.keys(&ma, &Tensor::ones((2, 5), DType::F32, &dev)?)?;
            let kb = att.keys(&mb, &Tensor::ones((1, 2), DType::F32, &dev)?)?;
            let joined = AttentionKeys::cat(&[&ka, &kb])?;
            assert_eq!(joined.len()?, 5);
            let q = rand((3, 1, 4))?;
            let (ctx, _) = att.forward(&q, &joined)?;
            let (ctx_a, _) = att.forward(&q.narrow(0, 0, 2)?, &ka)?;
            let (ctx_b, _) = att.forward(&q.narrow(0, 2, 1)?, &kb)?;
            let alone = Tensor::cat(&[&ctx_a, &ctx_b], 0)?;
            let diff = (ctx - &alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{kind:?}: joined {diff}");
            // The short row twice, trimmed to its length, then selected again.
            let rows = |r: &[u32]| Tensor::new(r, &dev);
            let kept = joined.index_select(&rows(&[2, 2])?)?.narrow(2)?;
            let twice = kept.index_select(&rows(&[1, 0])?)?;
            let q2 = q.narrow(0, 2, 1)?.repeat((2, 1, 1))?;
            let (ctx2, _) = att.forward(&q2, &twice)?;
            let want = ctx_b.repeat((2, 1, 1))?;
            let diff = (ctx2 - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{kind:?}: trimmed {diff}");
        }
        Ok(())
    }
}
