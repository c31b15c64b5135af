//! Measures k256 sign and verify on this machine: `cargo run --release -p tendr-core --example verify_speed`.
fn main() {
    let k = tendr_core::PrivateKey::from_seed(b"speed");
    let vk = k.public_key().verifying_key().unwrap();
    let n = 2000;
    let t = std::time::Instant::now();
    let sigs: Vec<_> = (0..n).map(|i: u32| k.sign(&i.to_be_bytes())).collect();
    let sign_us = t.elapsed().as_micros() as f64 / n as f64;
    let t = std::time::Instant::now();
    for (i, s) in sigs.iter().enumerate() {
        tendr_core::crypto::verify(&vk, &(i as u32).to_be_bytes(), s).unwrap();
    }
    let verify_us = t.elapsed().as_micros() as f64 / n as f64;
    println!("sign {sign_us:.1} us, verify {verify_us:.1} us");
}
