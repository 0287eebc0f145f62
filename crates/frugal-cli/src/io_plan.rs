//! Each command's inputs and outputs, declared for the guard ([`IoPlan`]) and checked in
//! `dispatch` before any work: no output may be an input (through any link), a device, a FIFO
//! or a folder; every input must be a regular file (or a folder where one is expected). A
//! recipe declares its own (`frugal_pipeline::recipe::Recipe::io_plan`), all steps at once.

use crate::{commands, Command};
use frugal_formats::guard::{Expect, IoPlan};
use std::path::PathBuf;

/// The paths `cmd` reads and writes.
pub fn plan(cmd: &Command) -> IoPlan {
    let mut p = IoPlan::new();
    let opt = |p: &mut IoPlan, what: &str, path: &Option<PathBuf>| {
        if let Some(x) = path {
            p.input(what, x);
        }
    };
    match cmd {
        Command::Inspect(commands::inspect::Args { file, .. }) => {
            p.input("model", file);
        }
        Command::Eval(commands::eval::Args {
            model,
            text,
            reference,
            dump_items,
            ..
        }) => {
            p.add_input("model", model, Expect::FileOrDir);
            if let Some(r) = reference {
                p.add_input("--reference", r, Expect::FileOrDir);
            }
            opt(&mut p, "--text", text);
            if let Some(d) = dump_items {
                p.output("--dump-items", d);
            }
        }
        Command::Distill(commands::distill::Args {
            out,
            student,
            text,
            eval_text,
            teacher,
            ..
        }) => {
            opt(&mut p, "--student", student);
            for t in teacher {
                p.input("--teacher", t);
            }
            opt(&mut p, "--text", text);
            opt(&mut p, "--eval-text", eval_text);
            p.output("--out", out).output(
                "the checkpoint",
                frugal_pipeline::quantize::checkpoint_path(out),
            );
        }
        Command::Prune(commands::prune::Args {
            input,
            output,
            calib,
            eval_text,
            ..
        }) => {
            p.input("input model", input);
            opt(&mut p, "--calib", calib);
            opt(&mut p, "--eval-text", eval_text);
            p.output("output", output);
        }
        Command::Quantize(commands::quantize::Args {
            input,
            output,
            plan,
            calib,
            eval_text,
            ..
        }) => {
            p.add_input("input model", input, Expect::FileOrDir);
            opt(&mut p, "--plan", plan);
            // An encoder's `--calib brown` names the Brown corpus, not a file.
            let brown = |c: &&PathBuf| input.is_dir() && c.as_os_str() == "brown" && !c.exists();
            opt(
                &mut p,
                "--calib",
                &calib.as_ref().filter(|c| !brown(c)).cloned(),
            );
            opt(&mut p, "--eval-text", eval_text);
            if input.is_dir() {
                p.output_dir("output folder", output);
            } else {
                p.output("output", output);
            }
        }
        Command::Tune(commands::tune::Args {
            input,
            output,
            policy,
            calib,
            search,
            heldout,
            data,
            ..
        }) => {
            p.input("input model", input);
            opt(&mut p, "--policy", policy);
            opt(&mut p, "--calib", calib);
            opt(&mut p, "--eval", search);
            opt(&mut p, "--heldout", heldout);
            p.output("output", output)
                .output("the report", frugal_pipeline::tune::report_path(output));
            if data.is_some() {
                p.output(
                    "the plan",
                    frugal_pipeline::tune_classifier::plan_path(output),
                );
            } else {
                p.output("the recipe", frugal_pipeline::tune::recipe_path(output));
            }
        }
        Command::Dequantize(commands::dequantize::Args { input, output }) => {
            p.input("input model", input).output("output", output);
        }
        Command::BrownText(commands::brown_text::Args { dir, out, .. }) => {
            if let Some(d) = dir {
                p.add_input("--dir", d, Expect::Dir);
            }
            p.output("output", out);
        }
        Command::Run(commands::run::Args { recipe, .. }) => {
            opt(&mut p, "recipe", recipe);
        }
        Command::Check(commands::check::Args { policy, report, .. }) => {
            opt(&mut p, "--policy", policy);
            opt(&mut p, "report", report);
        }
        Command::Measure(commands::measure::Args {
            model,
            baseline,
            cost,
            export,
            ..
        }) => {
            if let Some(m) = model {
                p.add_input("model", m, Expect::FileOrDir);
            }
            opt(&mut p, "--baseline", baseline);
            opt(&mut p, "--cost", cost);
            if let Some(d) = export {
                p.output_into("--export", d, &frugal_pipeline::measure::EXPORT_FILES);
            }
        }
    }
    p
}
