//! Search strategies that drive a [`Decoder`] through `start` and `step`.

use candle_core::{Device, Result, Tensor, D};
use seq2seq_nn::Ctx;

use crate::{Decoder, EncoderOutput};

/// The special token ids a search must know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
}

/// A (V) bias that is 0 for allowed tokens and -inf for the ones a search must never emit:
/// pad and bos always, unk when `forbid_unk`. Adding it to the logits makes these tokens
/// impossible rather than unlikely.
pub fn forbidden_bias(
    vocab: usize,
    sp: SpecialTokens,
    forbid_unk: bool,
    dev: &Device,
) -> Result<Tensor> {
    let mut bias = vec![0f32; vocab];
    bias[sp.pad as usize] = f32::NEG_INFINITY;
    bias[sp.bos as usize] = f32::NEG_INFINITY;
    if forbid_unk {
        bias[sp.unk as usize] = f32::NEG_INFINITY;
    }
    Tensor::from_vec(bias, vocab, dev)
}

/// Greedy decoding of a batch: returns each row's tokens without bos/eos.
///
/// Rows that emit eos leave the batch, so later steps only compute the rows still running.
pub fn greedy(
    dec: &Decoder,
    enc: &EncoderOutput,
    batch: usize,
    sp: SpecialTokens,
    max_len: usize,
    forbid_unk: bool,
    dev: &Device,
) -> Result<Vec<Vec<u32>>> {
    let mut ctx = Ctx::eval();
    let mut state = dec.start(enc, batch, dev)?;
    let mut mem = dec.prepare(enc)?;
    let bias = forbidden_bias(dec.config().vocab_size, sp, forbid_unk, dev)?.unsqueeze(0)?;
    let mut out = vec![Vec::new(); batch];
    let mut active: Vec<usize> = (0..batch).collect();
    let mut prev = Tensor::full(sp.bos, batch, dev)?;
    for _ in 0..max_len {
        let (logits, next_state, _) = dec.step(&prev, &state, &mem, &mut ctx)?;
        let next: Vec<u32> = logits.broadcast_add(&bias)?.argmax(D::Minus1)?.to_vec1()?;
        let mut keep = Vec::with_capacity(active.len());
        for (i, &tok) in next.iter().enumerate() {
            if tok == sp.eos {
                continue;
            }
            out[active[i]].push(tok);
            keep.push(i as u32);
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() == active.len() {
            state = next_state;
            prev = Tensor::from_vec(next, active.len(), dev)?;
        } else {
            let rows = Tensor::from_vec(keep.clone(), keep.len(), dev)?;
            state = next_state.index_select(&rows)?;
            mem = mem.index_select(&rows)?;
            prev = Tensor::from_vec(
                keep.iter().map(|&i| next[i as usize]).collect::<Vec<_>>(),
                keep.len(),
                dev,
            )?;
            active = keep.iter().map(|&i| active[i as usize]).collect();
        }
    }
    Ok(out)
}
