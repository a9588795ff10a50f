#![allow(clippy::unwrap_used)]
use bytebot_store::{Store, TaskRow};
#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let store = Store::open(&url).await.unwrap();
    let n = 20000;
    let t0 = std::time::Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut hs = Vec::new();
    for i in 0..n {
        let s = store.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        hs.push(tokio::spawn(async move {
            assert!(s.insert_nonce("k", &format!("n{i}"), 1).await.unwrap());
            s.insert_task(&TaskRow { id: format!("t{i}"), key_id: "k".into(), intent: "screenshot".into(), args_json: "{}".into(), plan_json: "[{\"summary\":\"x\"}]".into(), plan_digest: "abcdef0123456789".into(), risk: "low".into(), state: "planned".into(), token_hash: "0123456789abcdef0123456789abcdef".into(), expires_at: 1, approved_at: None, approved_by: None, token_used_at: None, result_json: None, created_at: 1, updated_at: 1 }).await.unwrap();
            drop(permit);
        }));
    }
    for h in hs { h.await.unwrap(); }
    let el = t0.elapsed();
    println!("{n} plan-like requests in {el:?} = {:.0}/s; {:?}", n as f64 / el.as_secs_f64(), store.write_stats());
    store.close().await;
}
