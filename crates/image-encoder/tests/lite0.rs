//! EfficientNet-Lite0 on the real checkpoint (opt-in: runs when ../shared/models holds it, and
//! says why it skips otherwise).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use seq2seq_image_encoder::lite0::efficientnet_lite0;
use seq2seq_image_encoder::preprocess::{
    load_rgb, resize_crop, to_tensor, ImageLimits, Normalization,
};
use seq2seq_image_encoder::pth::load_pth;

fn shared() -> PathBuf {
    std::env::var_os("SEQ2SEQ_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

fn checkpoint() -> Option<PathBuf> {
    let p = shared().join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} not found (set SEQ2SEQ_SHARED_DIR)",
            p.display()
        );
        None
    }
}

#[test]
fn block_structure_matches_the_checkpoint() {
    let Some(ckpt) = checkpoint() else { return };
    let tensors = load_pth(&ckpt, &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), 296);
    assert_eq!(tensors["_conv_stem.weight"].dims(), &[32, 3, 3, 3]);
    // Every tensor is read with the shape our architecture expects (VarBuilder checks shapes).
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let net = efficientnet_lite0(vb).unwrap();
    assert_eq!(net.num_blocks(), 16);
    let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.features(&x).unwrap().dims(), &[1, 7, 7, 1280]);
}

#[test]
fn flickr8k_dogs_get_a_dog_breed_in_the_top5() {
    let Some(ckpt) = checkpoint() else { return };
    let flickr = shared().join("datasets/flickr8k");
    let tokens = match std::fs::read_to_string(flickr.join("Flickr8k.token.txt")) {
        Ok(t) => t,
        Err(_) => {
            eprintln!("skipped: no Flickr8k under {}", flickr.display());
            return;
        }
    };
    // Images whose five captions all mention a dog.
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in tokens.lines() {
        let (id, cap) = line.split_once('\t').unwrap();
        let img = id.split('#').next().unwrap();
        if cap.to_lowercase().contains(" dog") {
            *counts.entry(img).or_default() += 1;
        }
    }
    let dogs: Vec<&str> = counts
        .iter()
        .filter(|(_, &n)| n == 5)
        .map(|(k, _)| *k)
        .take(12)
        .collect();
    assert_eq!(dogs.len(), 12);
    let vb = VarBuilder::from_tensors(
        load_pth(&ckpt, &Device::Cpu).unwrap(),
        DType::F32,
        &Device::Cpu,
    );
    let net = efficientnet_lite0(vb).unwrap();
    let imgs: Vec<Tensor> = dogs
        .iter()
        .map(|d| {
            let img = load_rgb(&flickr.join("images").join(d), &ImageLimits::default()).unwrap();
            to_tensor(
                &resize_crop(&img, 224, None),
                Normalization::Lite,
                &Device::Cpu,
            )
            .unwrap()
        })
        .collect();
    let x = Tensor::stack(&imgs, 0).unwrap();
    let logits = net.classify(&net.features(&x).unwrap()).unwrap();
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut hits = 0;
    for (d, p) in dogs.iter().zip(&probs) {
        let mut idx: Vec<usize> = (0..1000).collect();
        idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        // ImageNet-1k classes 151..=268 are dog breeds.
        let dog = idx[..5].iter().any(|&i| (151..=268).contains(&i));
        eprintln!("{d}: top-5 {:?} dog={dog}", &idx[..5]);
        hits += usize::from(dog);
    }
    assert!(
        hits >= 10,
        "only {hits} of 12 dog photos have a dog breed in their top 5"
    );
}

#[test]
fn fine_tuned_blocks_are_variables_and_the_split_changes_nothing() {
    use seq2seq_image_encoder::ImageEncoder;
    use seq2seq_nn::{Ctx, SeededVarMap};
    let Some(ckpt) = checkpoint() else { return };
    let tensors = load_pth(&ckpt, &Device::Cpu).unwrap();
    let frozen = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let vm = SeededVarMap::new(1);
    let enc = ImageEncoder::lite0(frozen.clone(), vm.var_builder(&Device::Cpu), 2, 0.0).unwrap();
    // The last two blocks and the head are variables; nothing else (not the classifier).
    let vars = vm.var_map().data().lock().unwrap().clone();
    let expected: Vec<&String> = tensors
        .keys()
        .filter(|k| {
            (k.starts_with("_blocks.14.")
                || k.starts_with("_blocks.15.")
                || k.starts_with("_conv_head")
                || k.starts_with("_bn1."))
                && !k.ends_with("num_batches_tracked")
        })
        .collect();
    assert_eq!(vars.len(), expected.len(), "{:?}", vars.keys());
    for k in expected {
        vars[k].set(&tensors[k]).unwrap();
    }
    // Frozen part then trainable part == the whole network.
    let x = Tensor::randn(0f32, 1., (1, 3, 96, 96), &Device::Cpu).unwrap();
    let mid = enc.frozen(&x).unwrap();
    assert_eq!(mid.dims(), &[1, 3, 3, 192]);
    let out = enc.trainable(&mid, &mut Ctx::eval()).unwrap();
    let whole = efficientnet_lite0(frozen).unwrap().features(&x).unwrap();
    let diff = (out.memory.unwrap() - whole.flatten(1, 2).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "{diff}");
}
