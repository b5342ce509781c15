//! The book (`docs/`) shows every seed file as it is (an mdBook include of
//! the file), and the seeds are exactly the scenarios this suite runs.

use std::collections::BTreeSet;

use authchain_testkit::workspace_root;

use crate::seed::{SCENARIOS, read, seeds_dir};

/// The seed files the book's pages do not include (`{{#include
/// ../../examples/seeds/...}}`, which mdBook fills in from the file).
fn not_included(pages: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (scenario, files) in SCENARIOS {
        for file in *files {
            // The file exists and is read (`read` panics otherwise).
            let _ = read(scenario, file);
            let path = format!("examples/seeds/{scenario}/{file}");
            if !pages.contains(&format!("{{{{#include ../../{path}}}}}")) {
                missing.push(path);
            }
        }
    }
    missing
}

/// The book's pages (`docs/src/*.md`), one after another.
pub(crate) fn book_pages() -> String {
    let dir = workspace_root().join("docs/src");
    let mut pages = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    pages
}

#[test]
fn the_book_includes_every_seed_file() {
    let missing = not_included(&book_pages());
    assert!(
        missing.is_empty(),
        "docs/src/ does not include these files: {missing:?}"
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
