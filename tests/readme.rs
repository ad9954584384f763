//! The README shows the real output of its first command (`run` on the bundled sample
//! councils, no broker): this test runs it and compares, ignoring ids and times.
//! After a change that alters the output on purpose: `UPDATE_README=1 cargo test --test readme`.

mod common;

use common::{Sandbox, stdout};

const START: &str = "<!-- run-output:start -->\n```\n";
const END: &str = "```\n<!-- run-output:end -->";

fn normalise(text: &str) -> String {
    let uuid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let time = regex::Regex::new(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?Z?").unwrap();
    let text = uuid.replace_all(text, "<id>");
    time.replace_all(&text, "<time>").trim_end().to_string()
}

#[test]
fn the_readme_shows_the_real_output_of_the_first_command() {
    let sandbox = Sandbox::new();
    let out = sandbox.cli(None).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let actual = stdout(&out);
    let path = common::repo().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let a = readme.find(START).expect("README has the run-output block") + START.len();
    let b = a + readme[a..].find(END).expect("the block ends");
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{}{}", &readme[..a], actual, &readme[b..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    let shown = &readme[a..b];
    assert_eq!(
        normalise(shown),
        normalise(&actual),
        "README.md's sample output differs from what `run` prints; if the change is intended, run `UPDATE_README=1 cargo test --test readme`"
    );
}
