//! `docs/architecture.md` stays true: every source path it names exists,
//! and every function or type it names beside a file is defined there.

use std::path::Path;

#[test]
fn the_architecture_page_names_only_what_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    // Code spans, in order: a path, optionally followed by the function
    // (or `Type::function`) that hop goes through.
    let spans: Vec<&str> = page.split('`').skip(1).step_by(2).collect();
    let mut checked = 0;
    for (i, span) in spans.iter().enumerate() {
        if !["src/", "tests/", "clients/", "web/"]
            .iter()
            .any(|root| span.starts_with(root))
        {
            continue;
        }
        let path = root.join(span.trim_end_matches('/'));
        assert!(
            path.exists(),
            "docs/architecture.md names {span}, which does not exist"
        );
        checked += 1;
        let Some(next) = spans.get(i + 1) else {
            continue;
        };
        let is_name = next
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if path.is_file()
            && is_name
            && !next.is_empty()
            && page.contains(&format!("`{span}` `{next}`"))
        {
            let name = next.rsplit("::").next().unwrap();
            let source = std::fs::read_to_string(&path).unwrap();
            let defined = [
                format!("fn {name}("),
                format!("fn {name}<"),
                format!("struct {name}"),
                format!("enum {name}"),
                format!("trait {name}"),
            ];
            assert!(
                defined.iter().any(|d| source.contains(d.as_str())),
                "docs/architecture.md names {span} `{next}`, which that file does not define"
            );
        }
    }
    assert!(
        checked >= 20,
        "only {checked} paths found: the page's format changed?"
    );
}
