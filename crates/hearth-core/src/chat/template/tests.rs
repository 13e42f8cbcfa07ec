use super::*;

fn template(source: &str) -> ChatTemplate {
    ChatTemplate::new(
        source,
        [
            ("bos_token", Some("<s>".into())),
            ("eos_token", Some("</s>".into())),
            ("unk_token", None),
            ("pad_token", None),
        ],
    )
    .unwrap()
}

fn render(source: &str) -> String {
    template(source)
        .render(&[Message::new("user", "  hi  ")], true)
        .unwrap()
}

#[test]
fn python_isms_work() {
    assert_eq!(
        render("{{ messages[0].content.strip() }}|{{ messages[0]['content'].startswith('  h') }}"),
        "hi|True"
    );
    assert_eq!(
        render("{{ bos_token }}{{ eos_token }}{{ unk_token is defined }}"),
        "<s></s>False"
    );
    assert_eq!(
        render("{% if tools %}t{% endif %}{{ tools }}|{{ add_generation_prompt }}"),
        "None|True"
    );
    assert_eq!(
        render("{% for m in messages %}{% if loop.first %}{% break %}{% endif %}{% endfor %}ok"),
        "ok"
    );
}

#[test]
fn blocks_are_trimmed_as_transformers_does() {
    assert_eq!(render("{% if true %}\n  a\n{% endif %}\n"), "  a\n");
    assert_eq!(render("  {% if true %}b{% endif %}"), "b");
}

#[test]
fn raise_exception_is_reported_as_the_templates_own_error() {
    let err = template("{{ raise_exception('Roles must alternate') }}")
        .render(&[], true)
        .unwrap_err();
    assert!(
        matches!(&err, ChatError::Raised(m) if m == "Roles must alternate"),
        "{err:?}"
    );
    assert!(matches!(
        ChatTemplate::new("{% if %}", Default::default()),
        Err(ChatError::Syntax(_))
    ));
}

#[test]
fn tojson_writes_what_python_writes() {
    let t = template(
        "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'é\"\\n' | tojson(ensure_ascii=true) }}",
    );
    let x = TemplateValue::from(serde_json_like());
    let out = t
        .render_values(TemplateValue::from(()), false, None, &[("x", x)])
        .unwrap();
    assert_eq!(
        out,
        "{\"a\": [1, 2.5, null, true], \"b\": \"日本\"}|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": \"日本\"\n}|\"\\u00e9\\\"\\n\""
    );
}

fn serde_json_like() -> std::collections::BTreeMap<&'static str, TemplateValue> {
    let mut m = std::collections::BTreeMap::new();
    m.insert(
        "a",
        TemplateValue::from(vec![
            TemplateValue::from(1),
            TemplateValue::from(2.5),
            TemplateValue::from(()),
            TemplateValue::from(true),
        ]),
    );
    m.insert("b", TemplateValue::from("日本"));
    m
}

/// Values nested deep enough to overflow a browser's stack when minijinja drops,
/// iterates or compares them (about 10,000 levels of lists there) are never built: each of
/// these ends in a budget error on a 1 MiB stack, which minijinja's recursion over such a
/// value would overflow.
#[test]
fn deep_values_are_refused_on_a_stack_as_small_as_a_browsers() {
    const LOOP: &str = "{% for i in range(60000) %}";
    let cases = [
        "{% set ns = namespace(x=[]) %}{{L}}{% set ns.x = [ns.x] %}{% endfor %}",
        "{% set ns = namespace(x={}) %}{{L}}{% set ns.x = {'a': ns.x} %}{% endfor %}",
        "{% set ns = namespace(x=[1]) %}{{L}}{% set ns.x = ns.x * 1 %}{% endfor %}{{ ns.x | list }}",
        "{% set ns = namespace(x=[1]) %}{{L}}{% set ns.x = ns.x[0:] %}{% endfor %}{{ ns.x | list }}",
        "{% set ns = namespace(x=range(1)) %}{{L}}{% set ns.x = ns.x | chain([]) %}{% endfor %}{{ ns.x | list }}",
        "{% set ns = namespace(x={}) %}{{L}}{% set ns.x = ns.x | chain({}) %}{% endfor %}{{ ns.x | list }}",
        "{% set ns = namespace(x=[1]) %}{{L}}{% set ns.x = ns.x | batch(1) %}{% endfor %}",
        "{% set ns = namespace(l=none) %}{{L}}{% for j in [ns.l] %}{% set ns.l = loop %}{% endfor %}{% endfor %}",
        "{% set h = namespace(n=namespace()) %}{{L}}{% set n = namespace() %}{% set c = h.n %}{% set c.x = n %}{% set h.n = n %}{% endfor %}",
        "{% macro f(x, n) %}{% if n %}{{ f([[[[[[[[[[x]]]]]]]]]], n - 1) }}{% endif %}{% endmacro %}{{ f([], 60000) }}",
    ];
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            for case in cases {
                let source = case.replace("{{L}}", LOOP);
                let t = template(&source);
                let ctx =
                    TemplateValue::from(BTreeMap::from([("messages", TemplateValue::from(()))]));
                let result = t.render_here(ctx);
                assert!(
                    matches!(result, Err(ChatError::OverBudget(_))),
                    "{source}: {result:?}"
                );
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn strftime_now_renders_the_time_set() {
    let mut t = template("{{ strftime_now('%Y-%m-%d') }}");
    t.set_now(0);
    assert_eq!(t.render(&[], false).unwrap(), "1970-01-01");
}
