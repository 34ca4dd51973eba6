//! Where each setting comes from: a flag over its `LOGOUT_LEDGER_*` variable, the variable over
//! the `--config` file, the file over the default. Each case makes the winning layer's value
//! invalid, so start-up stops naming exactly that value and no server starts.

use std::process::Command;

use crate::helpers::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

#[test]
fn a_flag_beats_its_variable_which_beats_the_file() {
    let dir = TempDir::new();
    let toml = dir.0.join("c.toml");
    std::fs::write(
        &toml,
        "listen = \"from-the-file\"\n\
         [[issuers]]\nissuer = \"https://op.example/\"\naudiences = [\"a\"]\n",
    )
    .expect("write config");
    let toml = toml.display().to_string();
    let cases: [(&[&str], Option<&str>, &str); 3] = [
        (&[], None, "from-the-file"),
        (&[], Some("from-the-variable"), "from-the-variable"),
        (
            &["--listen", "from-the-flag"],
            Some("from-the-variable"),
            "from-the-flag",
        ),
    ];
    for (args, variable, winner) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", &toml])
            .args(args)
            .env_remove("LOGOUT_LEDGER_LISTEN")
            .env_remove("LOGOUT_LEDGER_ISSUER");
        if let Some(v) = variable {
            cmd.env("LOGOUT_LEDGER_LISTEN", v);
        }
        let out = cmd.output().expect("run");
        assert!(!out.status.success(), "{args:?} {variable:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid configuration: --listen: \"{winner}\"")),
            "{args:?} {variable:?}: {stderr}"
        );
    }
}
