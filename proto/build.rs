fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/storage_tracker/v1/ingest.proto");
    tonic_prost_build::configure()
        .bytes(".storage_tracker.v1.Chunk.parquet")
        .compile_protos(&["proto/storage_tracker/v1/ingest.proto"], &["proto"])?;
    Ok(())
}
