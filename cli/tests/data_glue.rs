//! `tbc data glue` on a small TSV of each GLUE format and a user TSV: the columns each task
//! reads, labels, feature layout, schema, read back through the trainer's Dataset; bad input.

use cli::data_cmd::glue::{self, GlueArgs};
use cli::data_cmd::tokenizer::TokenizerArgs;
use runtime::data::example::{Example, Feature};
use runtime::data::schema::{ColumnType, Schema};
use runtime::data::tfrecord::Reader;
use runtime::data::{Dataset, Order, Shard};
use runtime::tokenizer::{TokenizerSettings, WordPieceTokenizer};
use std::path::{Path, PathBuf};

fn vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer/vocab.txt")
}

fn args(task: &str, input: &Path, out: &Path, n: usize) -> GlueArgs {
    GlueArgs {
        task: task.into(),
        tokenizer: TokenizerArgs::vocab(vocab(), false),
        max_seq_length: n,
        input: input.into(),
        output: out.into(),
        labels: None,
        test: false,
        schema_out: None,
        text_a_column: None,
        text_b_column: None,
        label_column: None,
        skip_header: false,
        float_label: false,
    }
}

fn read(path: &Path) -> Vec<Example> {
    Reader::open(path)
        .unwrap()
        .map(|r| Example::decode(&r.unwrap()).unwrap())
        .collect()
}

fn int(ex: &Example, name: &str) -> Vec<i64> {
    match &ex.features[name] {
        Feature::Int64(v) => v.clone(),
        f => panic!("{name} is {f:?}"),
    }
}

/// The ids run_classifier would write for (a, b) with this max length.
fn expect_ids(a: &str, b: Option<&str>, n: usize) -> Vec<i64> {
    let tok = WordPieceTokenizer::from_vocab(&vocab(), TokenizerSettings::UNCASED).unwrap();
    let (cls, sep) = tok.cls_sep();
    let f = cli::data_cmd::features::build(
        cls,
        sep,
        tok.ids(a).unwrap(),
        b.map(|t| tok.ids(t).unwrap()),
        n,
    );
    f.input_ids
}

struct Case {
    task: &'static str,
    tsv: &'static str,
    /// (text_a, text_b, label id) per expected row.
    rows: &'static [(&'static str, Option<&'static str>, i64)],
}

const CASES: &[Case] = &[
    Case {
        task: "MNLI",
        tsv: "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n\
0\t1\t2\tgov\t(x)\t(y)\t(X)\t(Y)\tThe cat sat on the mat.\tA cat is sitting.\tentailment\tentailment\n\
1\t1\t2\tgov\t(x)\t(y)\t(X)\t(Y)\tNobody came.\tEveryone came.\tcontradiction\tcontradiction\n\
2\t1\t2\tgov\t(x)\t(y)\t(X)\t(Y)\tIt rained.\tThe game was on.\tneutral\tneutral\n",
        rows: &[
            ("The cat sat on the mat.", Some("A cat is sitting."), 1),
            ("Nobody came.", Some("Everyone came."), 0),
            ("It rained.", Some("The game was on."), 2),
        ],
    },
    Case {
        task: "SST-2",
        tsv: "sentence\tlabel\nit 's a charming and often affecting journey . \t1\nunflinchingly bleak and desperate \t0\n",
        rows: &[
            ("it 's a charming and often affecting journey . ", None, 1),
            ("unflinchingly bleak and desperate ", None, 0),
        ],
    },
    Case {
        task: "CoLA",
        // No header in CoLA's train/dev files.
        tsv: "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
        rows: &[
            ("Our friends won't buy this analysis.", None, 1),
            ("They drank the pub.", None, 0),
        ],
    },
    Case {
        task: "QNLI",
        tsv: "index\tquestion\tsentence\tlabel\n0\tWhat came first?\tThe egg came first.\tentailment\n1\tWho won?\tIt rained all day.\tnot_entailment\n",
        rows: &[
            ("What came first?", Some("The egg came first."), 0),
            ("Who won?", Some("It rained all day."), 1),
        ],
    },
    Case {
        task: "MRPC",
        tsv: "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused his brother.\tHis brother was accused by Amrozi.\n0\t2108705\t2108831\tYucaipa owned Dominick's.\tDominick's was sold.\n",
        rows: &[
            ("Amrozi accused his brother.", Some("His brother was accused by Amrozi."), 1),
            ("Yucaipa owned Dominick's.", Some("Dominick's was sold."), 0),
        ],
    },
    Case {
        task: "QQP",
        // The third line lacks columns: skipped, as TinyBERT's QqpProcessor does.
        tsv: "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tHow do I learn Rust?\tWhat is the best way to learn Rust?\t1\n7\t8\tbroken line\n4\t5\t6\tWhy is the sky blue?\tHow tall is Everest?\t0\n",
        rows: &[
            ("How do I learn Rust?", Some("What is the best way to learn Rust?"), 1),
            ("Why is the sky blue?", Some("How tall is Everest?"), 0),
        ],
    },
    Case {
        task: "RTE",
        tsv: "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\tChristopher Reeve had an accident.\tnot_entailment\n1\tYet another example.\tAn example.\tentailment\n",
        rows: &[
            ("Dana Reeve died.", Some("Christopher Reeve had an accident."), 1),
            ("Yet another example.", Some("An example."), 0),
        ],
    },
];

#[test]
fn every_glue_format() {
    let n = 24;
    for case in CASES {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("dev.tsv");
        std::fs::write(&input, case.tsv).unwrap();
        let out = d.path().join("dev.tfrecord");
        let written = glue::run(&args(case.task, &input, &out, n)).unwrap();
        assert_eq!(written.rows, case.rows.len() as u64, "{}", case.task);
        let got = read(&out);
        assert_eq!(got.len(), case.rows.len(), "{}", case.task);
        for (ex, &(a, b, label)) in got.iter().zip(case.rows) {
            assert_eq!(
                int(ex, "input_ids"),
                expect_ids(a, b, n),
                "{} {a:?}",
                case.task
            );
            assert_eq!(int(ex, "label_ids"), [label], "{} {a:?}", case.task);
            assert_eq!(int(ex, "is_real_example"), [1]);
            let real = int(ex, "input_mask").iter().sum::<i64>() as usize;
            let ids = int(ex, "input_ids");
            assert!(ids[real..].iter().all(|&x| x == 0) && ids[real - 1] == 102);
            let seg = int(ex, "segment_ids");
            assert_eq!(seg.contains(&1), b.is_some(), "{} {a:?}", case.task);
        }
        // The schema sits next to the output, and the trainer's reader takes both.
        let schema = Schema::read(&d.path().join("schema.json")).unwrap();
        assert_eq!(written.schema, d.path().join("schema.json"));
        assert_eq!(schema.num_rows, Some(case.rows.len() as u64));
        assert_eq!(schema.columns.get("input_ids").unwrap().shape, [n]);
        let cols = ["input_ids", "input_mask", "segment_ids", "label_ids"];
        let ds = Dataset::open(d.path(), Some(&written.schema), &cols, n).unwrap();
        let batch = ds
            .batch(Order::Sequential, 0, 0, case.rows.len(), Shard::single())
            .unwrap();
        let labels: Vec<f64> = case.rows.iter().map(|r| r.2 as f64).collect();
        assert_eq!(batch.columns["label_ids"].to_f64(), labels, "{}", case.task);
    }
}

#[test]
fn mnli_dev_matched_label_is_the_last_column() {
    // dev_matched.tsv has label1..label5 before gold_label.
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("dev_matched.tsv");
    let mut header: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    header.extend(
        [
            "sentence1",
            "sentence2",
            "label1",
            "label2",
            "label3",
            "label4",
            "label5",
            "gold_label",
        ]
        .map(String::from),
    );
    let line = "0\t1\t2\tg\tx\ty\tX\tY\tA man sleeps.\tA man is awake.\tneutral\tcontradiction\tcontradiction\tcontradiction\tneutral\tcontradiction";
    std::fs::write(&input, format!("{}\n{line}\n", header.join("\t"))).unwrap();
    let out = d.path().join("dev_matched.tfrecord");
    glue::run(&args("mnli", &input, &out, 16)).unwrap();
    assert_eq!(int(&read(&out)[0], "label_ids"), [0]);
}

#[test]
fn stsb_writes_a_float_label() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("dev.tsv");
    std::fs::write(
        &input,
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
         0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000\n\
         1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\tA child is riding a horse.\t4.750\n",
    )
    .unwrap();
    let out = d.path().join("stsb.tfrecord");
    let w = glue::run(&args("STS-B", &input, &out, 32)).unwrap();
    let got = read(&out);
    assert_eq!(got[1].features["label_ids"], Feature::Float(vec![4.75]));
    assert_eq!(
        int(&got[0], "input_ids"),
        expect_ids(
            "A man with a hard hat is dancing.",
            Some("A man wearing a hard hat is dancing."),
            32
        )
    );
    let schema = Schema::read(&w.schema).unwrap();
    assert_eq!(
        schema.columns.get("label_ids").unwrap().ty,
        ColumnType::Float32
    );
    let ds = Dataset::open(&out, Some(&w.schema), &["input_ids", "label_ids"], 32).unwrap();
    let b = ds
        .batch(Order::Sequential, 0, 0, 2, Shard::single())
        .unwrap();
    assert_eq!(b.columns["label_ids"].to_f64(), [5.0, 4.75]);
}

#[test]
fn user_tsv_and_test_split() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("topics.tsv");
    std::fs::write(
        &input,
        "label\ttext\nsports\tThe match ended in a draw.\n\ntech\tA new chip was released.\r\npolitics\tThe vote passed.\n",
    )
    .unwrap();
    let out = d.path().join("topics.tfrecord");
    let mut a = args("tsv", &input, &out, 16);
    a.text_a_column = Some(1);
    a.label_column = Some(0);
    a.labels = Some(vec!["sports".into(), "politics".into(), "tech".into()]);
    a.skip_header = true;
    a.schema_out = Some(d.path().join("topics_schema.json"));
    let w = glue::run(&a).unwrap();
    assert_eq!(w.rows, 3, "the blank line is skipped");
    let got = read(&out);
    let labels: Vec<_> = got.iter().map(|e| int(e, "label_ids")[0]).collect();
    assert_eq!(labels, [0, 2, 1]);
    assert_eq!(
        int(&got[1], "input_ids"),
        expect_ids("A new chip was released.", None, 16)
    );
    assert!(d.path().join("topics_schema.json").exists());
    assert!(!d.path().join("schema.json").exists());

    // A GLUE test split: no labels, every row gets the first label (SST-2 test: text at column 1).
    let input = d.path().join("test.tsv");
    std::fs::write(
        &input,
        "index\tsentence\n0\tuneasy mishmash of styles\n1\ta gorgeous film\n",
    )
    .unwrap();
    let out = d.path().join("test.tfrecord");
    let mut a = args("SST-2", &input, &out, 16);
    a.test = true;
    glue::run(&a).unwrap();
    let got = read(&out);
    assert_eq!(
        int(&got[1], "input_ids"),
        expect_ids("a gorgeous film", None, 16)
    );
    assert_eq!(int(&got[0], "label_ids"), [0]);
}

#[test]
fn cased_and_custom_labels() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("dev.tsv");
    std::fs::write(&input, "sentence\tlabel\nHello World\tneg\n").unwrap();
    let out = d.path().join("x.tfrecord");
    let mut a = args("sst2", &input, &out, 8);
    a.labels = Some(vec!["pos".into(), "neg".into()]);
    a.tokenizer.cased = true;
    glue::run(&a).unwrap();
    let ex = &read(&out)[0];
    assert_eq!(int(ex, "label_ids"), [1]);
    // "Hello" is not in the uncased vocabulary when case is kept.
    assert_eq!(int(ex, "input_ids")[1], 100, "[UNK]");
}

fn err(a: &GlueArgs) -> String {
    format!("{:#}", glue::run(a).unwrap_err())
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("dev.tsv");
    let out = d.path().join("o.tfrecord");
    std::fs::write(
        &input,
        "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tmaybe\n",
    )
    .unwrap();
    let e = err(&args("QNLI", &input, &out, 16));
    assert!(
        e.contains("dev.tsv:2")
            && e.contains("label 'maybe'")
            && e.contains("entailment, not_entailment"),
        "{e}"
    );
    assert!(!out.exists(), "no output on error");

    // A line shorter than its header would shift the label (counted from the end).
    std::fs::write(&input, "index\tquestion\tsentence\tlabel\n0\tonly two\n").unwrap();
    let e = err(&args("QNLI", &input, &out, 16));
    assert!(
        e.contains("dev.tsv:2") && e.contains("2 column(s) but the header has 4"),
        "{e}"
    );
    // Without a header (CoLA), the missing column is named.
    std::fs::write(&input, "src\t1\n").unwrap();
    let e = err(&args("CoLA", &input, &out, 16));
    assert!(
        e.contains("dev.tsv:1") && e.contains("column 3") && e.contains("2 column(s)"),
        "{e}"
    );

    let mut a = args("QNLI", &input, &out, 16);
    a.tokenizer.vocab = Some(d.path().join("no_vocab.txt"));
    let e = err(&a);
    assert!(
        e.contains("cannot read vocabulary") && e.contains("no_vocab.txt"),
        "{e}"
    );

    let e = err(&args("WNLI", &input, &out, 16));
    assert!(e.contains("unknown task 'WNLI'"), "{e}");
    let e = err(&args("tsv", &input, &out, 16));
    assert!(e.contains("--text-a-column"), "{e}");
    let mut a = args("tsv", &input, &out, 16);
    a.text_a_column = Some(1);
    a.label_column = Some(-1);
    let e = err(&a);
    assert!(e.contains("--labels"), "{e}");
    let mut a = args("MRPC", &input, &out, 16);
    a.text_a_column = Some(1);
    assert!(err(&a).contains("only for --task tsv"));
    assert!(err(&args("QNLI", &input, &out, 2)).contains("at least 3"));
    let e = err(&args("QNLI", &d.path().join("missing.tsv"), &out, 16));
    assert!(
        e.contains("cannot read") && e.contains("missing.tsv"),
        "{e}"
    );
    std::fs::write(&input, "index\tquestion\tsentence\tlabel\n").unwrap();
    assert!(err(&args("QNLI", &input, &out, 16)).contains("no data rows"));
    std::fs::write(&input, "h\n0\ta\tb\tc\td\te\tf\tg\th\tnan\n").unwrap();
    let e = err(&args("STS-B", &input, &out, 16));
    assert!(
        e.contains("dev.tsv:2") && e.contains("not a finite number"),
        "{e}"
    );
    // The output (or schema) may not be the input.
    let before = std::fs::read(&input).unwrap();
    let e = err(&args("STS-B", &input, &input, 16));
    assert!(e.contains("tbc never writes over its input"), "{e}");
    let mut a = args("STS-B", &input, &out, 16);
    a.schema_out = Some(input.clone());
    assert!(err(&a).contains("tbc never writes over its input"));
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input is untouched"
    );
    std::fs::write(&input, "h\n0\ta\tb\tc\td\te\tf\tg\th\tx.y\n").unwrap();
    let e = err(&args("STS-B", &input, &out, 16));
    assert!(
        e.contains("dev.tsv:2") && e.contains("'x.y' is not a number"),
        "{e}"
    );
}

#[test]
fn the_binary_reports_errors_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("dev.tsv");
    std::fs::write(&input, "sentence\tlabel\nfine\t1\n").unwrap();
    let run = |vocab: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tbc"))
            .args([
                "data",
                "glue",
                "--task",
                "SST-2",
                "--max-seq-length",
                "8",
                "--vocab",
            ])
            .arg(vocab)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(d.path().join("sst2.tfrecord"))
            .output()
            .unwrap()
    };
    let o = run(&d.path().join("vocab.txt"));
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cannot read vocabulary") && e.contains("vocab.txt"),
        "{e}"
    );
    let o = run(&vocab());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("wrote 1 rows to") && s.contains("schema.json"),
        "{s}"
    );
}
