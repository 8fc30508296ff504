use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;
use std::time::Instant;
fn main() {
    let dev = Default::default();
    for (k, n) in [(1024usize, 4096usize), (4096, 1024), (1024, 3072)] {
        let x = Tensor::<Flex, 2>::random([576, k], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Flex, 2>::random([n, k], Distribution::Normal(0.0, 0.5), &dev);
        let wt = w.clone().transpose();
        let wc = Tensor::<Flex, 2>::from_data(wt.clone().into_data(), &dev);
        for (name, ww) in [
            ("view", wt.clone()),
            ("contig", wc.clone()),
            ("view", wt.clone()),
            ("contig", wc.clone()),
        ] {
            let _ = x.clone().matmul(ww.clone()).into_data();
            let t = Instant::now();
            for _ in 0..10 {
                let _ = x.clone().matmul(ww.clone()).into_data();
            }
            let s = t.elapsed().as_secs_f64() / 10.0;
            println!(
                "k={k} n={n} {name}: {:.2} ms {:.0} GFLOPS",
                s * 1e3,
                2.0 * (576 * k * n) as f64 / s / 1e9
            );
        }
    }
}
