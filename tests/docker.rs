//! docker/compose.yaml runs the daemon with a data volume and a drop folder. No Docker engine
//! runs on the development machines, so the file is checked as data here, and by Debian's
//! `docker-compose config` where that is installed.

use std::path::Path;

#[test]
fn compose_runs_serve_with_a_data_volume_and_a_drop_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docker/compose.yaml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let bridge = &doc["services"]["council-bridge"];
    let command: Vec<&str> = bridge["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        command.contains(&"serve"),
        "the daemon, not a one-shot run restarted for ever: {command:?}"
    );
    let volumes: Vec<&str> = bridge["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.iter().any(|v| v.ends_with(":/app/var")),
        "a writable data volume: {volumes:?}"
    );
    assert!(
        volumes.iter().any(|v| v.ends_with(":/app/drops")),
        "a drop folder: {volumes:?}"
    );
    assert!(doc["volumes"].get("council-bridge-var").is_some());
    let health = bridge["healthcheck"]["test"].as_array().unwrap();
    assert!(
        health
            .iter()
            .any(|t| t.as_str().is_some_and(|s| s.contains("/ready")))
    );
    assert_eq!(bridge["restart"], "unless-stopped");
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("curl"),
        "the health check's curl is in the image"
    );

    if let Ok(out) = std::process::Command::new("docker-compose")
        .args(["-f", "docker/compose.yaml", "config", "-q"])
        .current_dir(root)
        .output()
    {
        assert!(
            out.status.success(),
            "docker-compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("docker-compose is not installed: the file was checked as data only");
    }
}
