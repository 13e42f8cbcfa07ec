//! The bounds on a template's source, checked before it is parsed: minijinja parses a chain
//! of operators or filters into a tree as deep as the chain is long, and nests each block
//! (and each `{% elif %}`) one level deeper, parsing and dropping the tree by recursing once
//! per level.

use minijinja::machinery::{self, Token};
use minijinja::syntax::SyntaxConfig;

/// Most tokens of one `{{ ... }}` or `{% ... %}` tag: minijinja parses a chain of operators or
/// filters into a tree as deep as the chain is long. Real templates use a few dozen.
const MAX_TAG_TOKENS: usize = 500;

/// Deepest nesting of blocks, counting each `{% elif %}` as one more level (minijinja nests
/// an `elif` in the `else` of the `if` before it). Real templates nest a handful.
const MAX_BLOCK_DEPTH: usize = 100;

/// Refuses a source whose parse tree would be too deep (see [`MAX_TAG_TOKENS`] and
/// [`MAX_BLOCK_DEPTH`]). A source the lexer rejects passes: the parser reports it.
pub(in crate::chat) fn check_source(source: &str, syntax: &SyntaxConfig) -> Result<(), String> {
    const OPENERS: [&str; 8] = [
        "for",
        "if",
        "macro",
        "call",
        "filter",
        "with",
        "autoescape",
        "block",
    ];
    /// The tag being read.
    struct Tag<'a> {
        tokens: usize,
        block: bool,
        keyword: Option<&'a str>,
        assigns: bool,
    }
    // One entry per open block: the levels it adds (1, plus one per `elif`).
    let mut open: Vec<usize> = Vec::new();
    let mut tag: Option<Tag> = None;
    for token in machinery::tokenize(source, false, syntax.clone()) {
        let Ok((token, _)) = token else {
            return Ok(());
        };
        match token {
            Token::VariableStart | Token::BlockStart => {
                tag = Some(Tag {
                    tokens: 0,
                    block: matches!(token, Token::BlockStart),
                    keyword: None,
                    assigns: false,
                })
            }
            Token::VariableEnd => tag = None,
            Token::BlockEnd => {
                let Some(Tag {
                    keyword: Some(keyword),
                    assigns,
                    ..
                }) = tag.take()
                else {
                    continue;
                };
                if OPENERS.contains(&keyword) || (keyword == "set" && !assigns) {
                    open.push(1);
                } else if keyword == "elif" {
                    if let Some(levels) = open.last_mut() {
                        *levels += 1;
                    }
                } else if keyword.starts_with("end") {
                    open.pop();
                }
                if open.iter().sum::<usize>() > MAX_BLOCK_DEPTH {
                    return Err(format!(
                        "its blocks are nested deeper than {MAX_BLOCK_DEPTH} levels"
                    ));
                }
            }
            token => {
                let Some(tag) = &mut tag else {
                    continue;
                };
                tag.tokens += 1;
                if tag.tokens > MAX_TAG_TOKENS {
                    return Err(format!("a tag is longer than {MAX_TAG_TOKENS} tokens"));
                }
                match token {
                    Token::Ident(name) if tag.block && tag.keyword.is_none() => {
                        tag.keyword = Some(name)
                    }
                    Token::Assign => tag.assigns = true,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tags_and_deep_blocks_are_refused_before_parsing() {
        let syntax = SyntaxConfig::default();
        let chain = format!("{{{{ 1{} }}}}", " + 1".repeat(MAX_TAG_TOKENS));
        assert!(check_source(&chain, &syntax).is_err());
        let elifs = format!(
            "{{% if a %}}{}{{% endif %}}",
            "{% elif a %}".repeat(MAX_BLOCK_DEPTH)
        );
        assert!(check_source(&elifs, &syntax).is_err());
        let fine = "{% for m in messages %}{% if a %}{% elif b %}{% else %}{% set x %}{{ m }}{% endset %}{% endif %}{% endfor %}";
        assert_eq!(check_source(fine, &syntax), Ok(()));
        let sequence = "{% if a %}{% endif %}".repeat(1000);
        assert_eq!(check_source(&sequence, &syntax), Ok(()));
    }
}
