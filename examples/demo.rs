//! The main job on the embedded default. Today (before training exists) it is an honest end-to-end
//! check of what is built: libtorch set-up and device. It grows as the crates land.

fn main() -> anyhow::Result<()> {
    println!("cellseg demo: {}", cellseg::libtorch_report());
    println!("training is not implemented yet (issue #8); this demo only checks the set-up");
    Ok(())
}
