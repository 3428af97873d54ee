#!/usr/bin/env python3
"""What the lesson's 1.175 nats/char means per real character.

The lesson's TensorFlow notebook (AI-For-Beginners, lesson 17, GenerativeTF.ipynb) trains on AG News
headlines in batches of 8 (`ds_train.batch(8)`), pre-pads each batch to its longest headline with
`pad_sequences` (id 0), one-hot encodes inputs and targets, and trains with Keras'
`categorical_crossentropy`. Its `Masking` layer masks nothing: a one-hot pad is not an all-zero
vector. So the loss it prints is an average over *every* position of the padded batch, padding
included, and most padding positions are nearly free to predict.

This script measures, on the headlines given (one per line), how many of those positions are real
predictions (each character, and the `<eos>` after the last one; the first character of the
longest headline in a batch is never predicted) and the least any model must pay at the padding
positions: before a headline starts the input is only padding, so "does it start now?" can be
predicted no better than the distribution of the start position allows (its entropy H). From those
it turns a padded-average loss into a bound on the loss per real character, which is what our
held-out figure measures (`seq2seq train` reports nats per target token, `</s>` included):

  bound if padding were free:          loss × positions / real
  bound with padding at its entropy:   (loss × positions − H(start) × padded headlines) / real

The second is the tighter; a model that learned the padding pattern as well as it can be learned
sits at it.

  python3 bench/lesson_metric.py ../shared/datasets/agnews-titles/test_titles.txt 1.175
"""
import collections
import math
import sys


def main(path, loss, batch=8):
    titles = [l.rstrip("\n") for l in open(path, encoding="utf-8")]
    lengths = [len(t) for t in titles]
    positions = real = 0
    starts = collections.Counter()
    for i in range(0, len(lengths), batch):
        b = lengths[i : i + batch]
        longest = max(b)
        positions += longest * len(b)
        for n in b:
            if n < longest:
                real += n + 1  # c1 (predicted from the last pad) .. cn, then <eos>
                starts[longest - n] += 1
            else:
                real += n  # c2 .. cn, then <eos>
    padded = sum(starts.values())
    h = -sum(c / padded * math.log(c / padded) for c in starts.values())
    print(f"headlines: {len(titles)}, batches of {batch}")
    print(f"positions: {positions}, real predictions: {real}, padding share: {1 - real / positions:.3f}")
    print(f"entropy of the start position: {h:.3f} nats over {padded} padded headlines")
    print(f"{loss} nats per padded position = at most {loss * positions / real:.4f} nats per real character if padding were free")
    print(f"  at most {(loss * positions - h * padded) / real:.4f} with padding at its entropy (the least a model can pay there)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], float(sys.argv[2]))
