use candle_core::{Device, Tensor};
use seq2seq_image_encoder::cnn::{small_cnn, SmallCnnConfig};
use seq2seq_nn::{Ctx, SeededVarMap};
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4 / 1024
}
fn main() -> candle_core::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let vm = SeededVarMap::new(1);
    let cfg = SmallCnnConfig { channels: vec![16, 32, 64], batch_norm: false, ..Default::default() };
    let cnn = small_cnn(cfg, vm.var_builder(&Device::Cpu))?;
    for i in 0..40 {
        let x = Tensor::randn(0f32, 1., (64, 3, 64, 64), &Device::Cpu)?;
        let y = match mode.as_str() {
            "conv" => {
                let w = vm.var_map().data().lock().unwrap().get("blocks.0.conv.weight").unwrap().as_tensor().clone();
                x.conv2d(&w, 1, 1, 1, 1)?
            }
            "pool" => x.max_pool2d(2)?,
            _ => cnn.features(&x, &mut Ctx::train(1))?,
        };
        let loss = y.sqr()?.mean_all()?;
        if mode != "fwd" {
            let _g = loss.backward()?;
        }
        if i % 5 == 0 { println!("{mode} step {i}: rss {} MB", rss()); }
    }
    Ok(())
}
