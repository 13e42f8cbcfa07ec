//! The hooks: the functions the rewritten instructions call (see
//! [`super::rewrite`](mod@super::rewrite)), the names they are installed under, and which
//! filters and tests are checked by which.

/// The functions the rewritten instructions call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hook {
    // In place of an instruction; they return its result.
    Compare(Cmp),
    In,
    Concat,
    // Before an instruction, on a copy of the value at the top of the stack.
    Key,
    // Before an instruction, on its operands, which they return (as stored, for `Store` and
    // `SetAttr`).
    Store,
    CompareOperands,
    Add,
    MapKeys,
    KwargsKeys,
    SetAttr,
    Changed,
    Filter(FilterKind),
    TestCompare,
    TestIn,
    TestPrint,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// How a filter uses its arguments, as far as its cost goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FilterKind {
    /// Prints them, or converts them to strings.
    Print,
    /// Compares or hashes their items (sorting: a few times each).
    Order,
    /// Applies a test to each item of the first (or to an attribute of it), with the others.
    Each,
    /// `map`: applies a filter to each item of the first, or takes an attribute of it.
    Map,
    /// `chain`: builds a lazy sequence (or mapping) over them.
    Chain,
    /// Visits their items (`sum`, which adds them).
    Visit,
}

/// Every hook, with the name of the global it is installed as.
pub(super) const HOOKS: [(Hook, &str); 25] = [
    (Hook::Compare(Cmp::Eq), "hearth:eq"),
    (Hook::Compare(Cmp::Ne), "hearth:ne"),
    (Hook::Compare(Cmp::Lt), "hearth:lt"),
    (Hook::Compare(Cmp::Lte), "hearth:lte"),
    (Hook::Compare(Cmp::Gt), "hearth:gt"),
    (Hook::Compare(Cmp::Gte), "hearth:gte"),
    (Hook::In, "hearth:in"),
    (Hook::Concat, "hearth:concat"),
    (Hook::Store, "hearth:store"),
    (Hook::Key, "hearth:key"),
    (Hook::CompareOperands, "hearth:compare-operands"),
    (Hook::Add, "hearth:add"),
    (Hook::MapKeys, "hearth:map-keys"),
    (Hook::KwargsKeys, "hearth:kwargs-keys"),
    (Hook::SetAttr, "hearth:setattr"),
    (Hook::Changed, "hearth:changed"),
    (Hook::Filter(FilterKind::Print), "hearth:filter-print"),
    (Hook::Filter(FilterKind::Order), "hearth:filter-order"),
    (Hook::Filter(FilterKind::Each), "hearth:filter-each"),
    (Hook::Filter(FilterKind::Map), "hearth:filter-map"),
    (Hook::Filter(FilterKind::Chain), "hearth:filter-chain"),
    (Hook::Filter(FilterKind::Visit), "hearth:filter-visit"),
    (Hook::TestCompare, "hearth:test-compare"),
    (Hook::TestIn, "hearth:test-in"),
    (Hook::TestPrint, "hearth:test-print"),
];

impl Hook {
    /// The name of the global this hook is installed as (see [`HOOKS`]).
    pub(super) fn name(self) -> &'static str {
        HOOKS
            .iter()
            .find(|(hook, _)| *hook == self)
            .map(|(_, name)| *name)
            .expect("HOOKS holds every hook")
    }
}

/// The check before a filter, by its name; `None` for those that look at no more than the
/// first level of their arguments, and for the filters the chat module adds, which check.
pub(super) fn filter_kind(name: &str) -> Option<FilterKind> {
    Some(match name {
        "length" | "count" | "first" | "last" | "default" | "d" | "attr" | "list" | "batch"
        | "slice" | "reverse" | "items" | "bool" | "round" | "abs" | "int" | "float" | "zip"
        | "tojson" | "string" | "join" => return None,
        "sort" | "dictsort" | "unique" | "min" | "max" | "groupby" => FilterKind::Order,
        "select" | "reject" | "selectattr" | "rejectattr" => FilterKind::Each,
        "map" => FilterKind::Map,
        "chain" => FilterKind::Chain,
        "sum" => FilterKind::Visit,
        _ => FilterKind::Print,
    })
}

/// The check before a test, by its name; `None` for those that do not walk their arguments.
pub(super) fn test_hook(name: &str) -> Option<Hook> {
    match name {
        "eq" | "equalto" | "==" | "ne" | "!=" | "lt" | "lessthan" | "<" | "le" | "<=" | "gt"
        | "greaterthan" | ">" | "ge" | ">=" => Some(Hook::TestCompare),
        "in" => Some(Hook::TestIn),
        "startingwith" | "endingwith" => Some(Hook::TestPrint),
        _ => None,
    }
}
