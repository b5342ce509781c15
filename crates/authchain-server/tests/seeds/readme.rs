//! The README shows every seed file as it is, and the seeds are exactly
//! the scenarios this suite runs.

use std::collections::BTreeSet;

use authchain_testkit::workspace_root;

use crate::seed::{SCENARIOS, read, seeds_dir};

/// The seed files `text` does not contain verbatim.
fn missing_from(text: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (scenario, files) in SCENARIOS {
        for file in *files {
            if !text.contains(&read(scenario, file)) {
                missing.push(format!("examples/seeds/{scenario}/{file}"));
            }
        }
    }
    missing
}

#[test]
fn the_readme_shows_every_seed_file_verbatim() {
    let path = workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let missing = missing_from(&readme);
    assert!(
        missing.is_empty(),
        "{} does not contain these files verbatim: {missing:?}",
        path.display()
    );
}

#[test]
fn every_seed_directory_and_file_is_run() {
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(seeds_dir()).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let scenario = entry.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap().file_name().to_string_lossy().into_owned();
            on_disk.insert(format!("{scenario}/{file}"));
        }
    }
    let listed: BTreeSet<String> = SCENARIOS
        .iter()
        .flat_map(|(scenario, files)| files.iter().map(move |f| format!("{scenario}/{f}")))
        .collect();
    assert_eq!(
        on_disk, listed,
        "examples/seeds/ and the suite's scenarios differ"
    );
}
