//! Flow validation without I/O: walks the positioned YAML tree against the flow schema and each
//! task's and trigger's property schema from the registry, and collects **every** problem, each
//! with its line and column.
//!
//! What is checked: the flow's own properties (and Kestra's rules for `id` and `namespace`);
//! every task and trigger against the common properties plus its type's own (unknown types and
//! properties get "did you mean" hints), recursively through flowable tasks; value types
//! ([`PropType`]); template syntax in every string of tasks, triggers, variables and outputs;
//! unique task, trigger and input ids; input defaults against the input type. A task or trigger
//! with no problem is then built with its factory, so the checks made by `build` (a cron
//! expression, say) are reported too.

use std::collections::HashMap;

use croner::parser::{CronParser, Seconds, Year};

use crate::duration::parse_duration;
use crate::flow::{
    FLOW_PROPERTIES, RetryPolicy, TASK_COMMON_PROPERTIES, TRIGGER_COMMON_PROPERTIES,
};
use crate::registry::{PropSpec, PropType, Registry, closest_names};
use crate::yaml::{Node, NodeValue};

/// One problem in a flow, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Every problem in a flow document, sorted by position.
pub fn validate_flow(root: &Node, registry: &Registry) -> Vec<Diagnostic> {
    let mut v = Validator {
        registry,
        diagnostics: Vec::new(),
        task_ids: HashMap::new(),
        trigger_ids: HashMap::new(),
    };
    v.flow(root);
    let mut diagnostics = v.diagnostics;
    diagnostics.sort_by_key(|d| (d.line, d.column));
    diagnostics
}

const CRON_HELP: &str = "a cron expression has 5 fields (minute hour day-of-month month \
     day-of-week), or 6 with seconds first, such as `*/5 * * * *` for every 5 minutes";
const CRON_NICKNAMES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// Parses a cron expression as Schedule triggers take it: 5 fields, or 6 with seconds first,
/// or one of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
pub fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    let text = cron.trim();
    if text.is_empty() {
        return Err(format!("the cron expression is empty: {CRON_HELP}"));
    }
    if text.starts_with('@') {
        if !CRON_NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(text)) {
            return Err(format!(
                "unknown cron shortcut `{text}` (shortcuts are {}; otherwise {CRON_HELP})",
                CRON_NICKNAMES.join(", ")
            ));
        }
    } else {
        let fields = text.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "cron `{text}` has {fields} field{}: {CRON_HELP}",
                if fields == 1 { "" } else { "s" }
            ));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("cron `{text}` is not valid ({e}): {CRON_HELP}"))
}

/// Checks a cron expression (5 fields, or 6 with seconds first).
pub fn check_cron(cron: &str) -> Result<(), String> {
    parse_cron(cron).map(|_| ())
}

/// Checks an IANA time zone name.
pub fn check_timezone(tz: &str) -> Result<(), String> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| format!("unknown time zone `{tz}` (use an IANA name such as Europe/Paris)"))
}

/// Who owns the properties being checked, for messages.
#[derive(Clone)]
struct Owner {
    /// Put before messages about a property: "task `hello`: ", or nothing for the flow.
    prefix: String,
    /// The path of the enclosing object property: "retry." (empty at the top).
    path: String,
    /// Completes "unknown property `x` …": "for task type `T`", "of the flow", "in `retry`".
    unknown: String,
    /// Whether strings here are rendered, so their template syntax is checked.
    templates: bool,
}

impl Owner {
    fn nested(&self, name: &str) -> Owner {
        Owner {
            prefix: self.prefix.clone(),
            path: format!("{}{name}.", self.path),
            unknown: format!("in `{}{name}`", self.path),
            templates: self.templates,
        }
    }
}

/// A task's or trigger's map, once its `type` is known.
struct PluginHead<'n> {
    entries: &'n [(Node, Node)],
    /// `task `x`: ` — what its messages start with.
    prefix: String,
    type_name: String,
    owner: Owner,
}

struct Validator<'r> {
    registry: &'r Registry,
    diagnostics: Vec<Diagnostic>,
    /// Task ids seen so far (the whole flow shares one id space), with their line.
    task_ids: HashMap<String, usize>,
    trigger_ids: HashMap<String, usize>,
}

impl Validator<'_> {
    fn report(&mut self, node: &Node, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            line: node.line,
            column: node.column,
            message: message.into(),
        });
    }

    fn flow(&mut self, root: &Node) {
        let Some(entries) = root.as_map() else {
            self.report(
                root,
                format!(
                    "a flow must be a map with `id`, `namespace` and `tasks`, got {}",
                    describe(root)
                ),
            );
            return;
        };
        let owner = Owner {
            prefix: String::new(),
            path: String::new(),
            unknown: "of the flow".into(),
            templates: false,
        };
        for (key, value) in entries {
            let name = key.key_text();
            let Some(spec) = FLOW_PROPERTIES.iter().find(|s| s.name == name) else {
                continue;
            };
            let templates = matches!(
                name.as_str(),
                "tasks" | "errors" | "triggers" | "variables" | "outputs"
            );
            let owner = Owner {
                templates,
                ..owner.clone()
            };
            match name.as_str() {
                "triggers" => self.triggers(value),
                "id" => {
                    self.value(value, spec, &owner);
                    self.flow_name(value, "id", is_flow_id, FLOW_ID_RULE);
                }
                "namespace" => {
                    self.value(value, spec, &owner);
                    self.flow_name(value, "namespace", is_namespace, NAMESPACE_RULE);
                }
                "labels" => {
                    if !matches!(
                        value.value,
                        NodeValue::Null | NodeValue::Map(_) | NodeValue::Seq(_)
                    ) {
                        self.report(
                            value,
                            format!(
                                "`labels` must be a map of `key: value`, got {}",
                                describe(value)
                            ),
                        );
                    }
                }
                "inputs" => {
                    self.value(value, spec, &owner);
                    self.inputs(value);
                }
                "outputs" => {
                    self.value(value, spec, &owner);
                    self.outputs(value);
                }
                _ => self.value(value, spec, &owner),
            }
        }
        // Unknown and missing properties (the rest was checked above, in document order).
        self.unknown_and_missing(root, entries, FLOW_PROPERTIES, &owner);
    }

    /// The flow's `id` or `namespace`: text following Kestra's rule.
    fn flow_name(&mut self, value: &Node, what: &str, valid: fn(&str) -> bool, rule: &str) {
        match &value.value {
            NodeValue::String(s) if !valid(s) => {
                self.report(value, format!("{what} `{s}` is not valid: {rule}"));
            }
            NodeValue::Bool(_) | NodeValue::Int(_) | NodeValue::Float(_) => {
                let text = value.key_text();
                self.report(
                    value,
                    format!("`{what}` must be text: quote it (`{what}: \"{text}\"`)"),
                );
            }
            _ => {}
        }
    }

    /// Reports properties not in `specs` (at their key) and required ones that are absent (at
    /// the map).
    fn unknown_and_missing(
        &mut self,
        map: &Node,
        entries: &[(Node, Node)],
        specs: &[PropSpec],
        owner: &Owner,
    ) {
        for (key, _) in entries {
            let name = key.key_text();
            if !specs.iter().any(|s| s.name == name) {
                let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
                let hint = property_hint(&name, &names);
                self.report(
                    key,
                    format!(
                        "{}unknown property `{name}` {} ({hint})",
                        owner.prefix, owner.unknown
                    ),
                );
            }
        }
        for spec in specs.iter().filter(|s| s.required) {
            if !entries.iter().any(|(k, _)| k.as_str() == Some(spec.name)) {
                self.report(
                    map,
                    format!(
                        "{}missing the required property `{}{}`",
                        owner.prefix, owner.path, spec.name
                    ),
                );
            }
        }
    }

    /// Checks a map's properties against `specs`: unknown, missing, and each value's type.
    fn properties(
        &mut self,
        map: &Node,
        entries: &[(Node, Node)],
        specs: &[PropSpec],
        owner: &Owner,
    ) {
        for (key, value) in entries {
            let name = key.key_text();
            if let Some(spec) = specs.iter().find(|s| s.name == name) {
                self.value(value, spec, owner);
            }
        }
        self.unknown_and_missing(map, entries, specs, owner);
    }

    /// Checks one property value against its spec (and the templates in it).
    fn value(&mut self, node: &Node, spec: &PropSpec, owner: &Owner) {
        let name = format!("{}{}", owner.path, spec.name);
        let prefix = owner.prefix.as_str();
        let templates = owner.templates && spec.name != "description";
        if matches!(node.value, NodeValue::Null) {
            // An empty value counts as absent.
            if spec.required {
                let what = match spec.ty {
                    PropType::Tasks => format!("at least one task in `{name}`"),
                    _ => format!("a value for `{name}`"),
                };
                self.report(node, format!("{prefix}{what} is required"));
            }
            return;
        }
        let wrong = |expected: &str| {
            format!(
                "{prefix}`{name}` must be {expected}, got {}",
                describe(node)
            )
        };
        // For a number or boolean written in quotes: how to write it instead.
        let unquote = |message: String| match &node.value {
            NodeValue::String(s)
                if matches!(
                    crate::yaml::plain_scalar(s),
                    NodeValue::Int(_) | NodeValue::Float(_) | NodeValue::Bool(_)
                ) =>
            {
                format!("{message} (write it without quotes: `{}: {s}`)", spec.name)
            }
            _ => message,
        };
        match spec.ty {
            PropType::String => match &node.value {
                NodeValue::Seq(_) | NodeValue::Map(_) => self.report(node, wrong("text")),
                _ => self.templates_in(node, templates),
            },
            PropType::Int => match &node.value {
                NodeValue::Int(_) => {}
                NodeValue::String(s) if s.contains("{{") => self.templates_in(node, templates),
                _ => self.report(node, unquote(wrong("an integer (or a `{{ … }}` template)"))),
            },
            PropType::Number => match &node.value {
                NodeValue::Int(_) | NodeValue::Float(_) => {}
                NodeValue::String(s) if s.contains("{{") => self.templates_in(node, templates),
                _ => self.report(node, unquote(wrong("a number (or a `{{ … }}` template)"))),
            },
            PropType::Bool => match &node.value {
                NodeValue::Bool(_) => {}
                NodeValue::String(s) if s.contains("{{") => self.templates_in(node, templates),
                _ => self.report(
                    node,
                    unquote(wrong("`true` or `false` (or a `{{ … }}` template)")),
                ),
            },
            PropType::Duration => match &node.value {
                NodeValue::String(s) => {
                    if let Err(e) = parse_duration(s) {
                        self.report(node, format!("{prefix}`{name}`: {e}"));
                    }
                }
                _ => self.report(node, wrong("an ISO-8601 duration such as PT5S")),
            },
            PropType::Enum(words) => match &node.value {
                NodeValue::String(s) if words.iter().any(|w| w.eq_ignore_ascii_case(s)) => {}
                _ => self.report(node, wrong(&format!("one of {}", words.join(", ")))),
            },
            PropType::StringOrList => match &node.value {
                NodeValue::Map(_) => self.report(node, wrong("text or a list of texts")),
                NodeValue::Seq(items) => {
                    for item in items {
                        match item.value {
                            NodeValue::Seq(_) | NodeValue::Map(_) => self.report(
                                item,
                                format!(
                                    "{prefix}the items of `{name}` must be text, got {}",
                                    describe(item)
                                ),
                            ),
                            _ => self.templates_in(item, templates),
                        }
                    }
                }
                _ => self.templates_in(node, templates),
            },
            PropType::List => match &node.value {
                NodeValue::Seq(_) => self.templates_in(node, templates),
                _ => self.report(node, wrong("a list")),
            },
            PropType::Map => match &node.value {
                NodeValue::Map(_) => self.templates_in(node, templates),
                _ => self.report(node, wrong("a map")),
            },
            PropType::Any => self.templates_in(node, templates),
            PropType::Tasks => match &node.value {
                NodeValue::Seq(items) => {
                    if items.is_empty() && spec.required {
                        self.report(
                            node,
                            format!("{prefix}at least one task in `{name}` is required"),
                        );
                    }
                    for item in items {
                        self.task(item);
                    }
                }
                _ => self.report(node, wrong("a list of tasks")),
            },
            PropType::TaskCases => match &node.value {
                NodeValue::Map(cases) => {
                    for (case, tasks) in cases {
                        match &tasks.value {
                            NodeValue::Null => {}
                            NodeValue::Seq(items) => {
                                for item in items {
                                    self.task(item);
                                }
                            }
                            _ => self.report(
                                tasks,
                                format!(
                                    "{prefix}case `{}` of `{name}` must be a list of tasks, got {}",
                                    case.key_text(),
                                    describe(tasks)
                                ),
                            ),
                        }
                    }
                }
                _ => self.report(node, wrong("a map from each case value to a list of tasks")),
            },
            PropType::Object(specs) => match node.as_map() {
                Some(entries) => self.properties(node, entries, specs, &owner.nested(spec.name)),
                None => self.report(node, wrong("a map")),
            },
            PropType::ObjectList(specs) => match &node.value {
                NodeValue::Seq(items) => {
                    for item in items {
                        match item.as_map() {
                            Some(entries) => {
                                let unknown = match item.get("id").map(|id| &id.value) {
                                    Some(NodeValue::String(id)) => {
                                        format!("in the `{name}` entry `{id}`")
                                    }
                                    _ => format!("in an entry of `{name}`"),
                                };
                                let item_owner = Owner {
                                    unknown,
                                    ..owner.clone()
                                };
                                self.properties(item, entries, specs, &item_owner);
                            }
                            None => self.report(
                                item,
                                format!(
                                    "{prefix}the items of `{name}` must be maps, got {}",
                                    describe(item)
                                ),
                            ),
                        }
                    }
                }
                _ => self.report(node, wrong("a list of maps")),
            },
            PropType::Tagged(variants) => {
                let Some(entries) = node.as_map() else {
                    self.report(node, wrong("a map"));
                    return;
                };
                let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
                let Some(type_node) = node
                    .get("type")
                    .filter(|t| !matches!(t.value, NodeValue::Null))
                else {
                    self.report(
                        node,
                        format!(
                            "{prefix}`{name}` needs a `type` (one of {})",
                            names.join(", ")
                        ),
                    );
                    return;
                };
                let chosen = type_node
                    .as_str()
                    .and_then(|t| variants.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)));
                match chosen {
                    Some((_, specs)) => {
                        self.properties(node, entries, specs, &owner.nested(spec.name));
                    }
                    None => self.report(
                        type_node,
                        format!(
                            "{prefix}`{name}.type` must be one of {}, got {}",
                            names.join(", "),
                            describe(type_node)
                        ),
                    ),
                }
            }
        }
    }

    /// Checks the template syntax of every string in `node` (when `enabled`).
    fn templates_in(&mut self, node: &Node, enabled: bool) {
        if !enabled {
            return;
        }
        match &node.value {
            NodeValue::String(s) => {
                if (s.contains("{{") || s.contains("{%"))
                    && let Err(e) = crate::template::check_syntax(s)
                {
                    self.report(node, format!("template does not parse: {e}"));
                }
            }
            NodeValue::Seq(items) => {
                for item in items {
                    self.templates_in(item, true);
                }
            }
            NodeValue::Map(entries) => {
                for (_, value) in entries {
                    self.templates_in(value, true);
                }
            }
            _ => {}
        }
    }

    /// Checks an `id` of a task or trigger: its rule, and that it is unique in the flow.
    fn unique_id(&mut self, id: &Node, what: &str) {
        let text = match &id.value {
            NodeValue::Null | NodeValue::Seq(_) | NodeValue::Map(_) => return,
            _ => id.key_text(),
        };
        if !is_task_id(&text) {
            self.report(
                id,
                format!("{what} id `{text}` is not valid: {TASK_ID_RULE}"),
            );
        }
        let seen = if what == "task" {
            &mut self.task_ids
        } else {
            &mut self.trigger_ids
        };
        if let Some(first) = seen.get(&text) {
            let first = *first;
            self.report(
                id,
                format!("duplicate {what} id `{text}` (first at line {first})"),
            );
        } else {
            seen.insert(text, id.line);
        }
    }

    /// What tasks and triggers share: a map with an `id` and a `type` naming a registered
    /// factory. Reports what is wrong; `None` when the rest cannot be checked.
    fn plugin_head<'n>(
        &mut self,
        node: &'n Node,
        kind: &str,
        example: &str,
        is_known: impl Fn(&str) -> bool,
        known_names: impl Fn() -> Vec<&'static str>,
    ) -> Option<PluginHead<'n>> {
        let Some(entries) = node.as_map() else {
            self.report(
                node,
                format!(
                    "a {kind} must be a map with `id` and `type`, got {}",
                    describe(node)
                ),
            );
            return None;
        };
        let id = node.get("id");
        let id_text = id
            .filter(|i| !matches!(i.value, NodeValue::Null))
            .map(Node::key_text)
            .unwrap_or_else(|| "?".into());
        if let Some(id) = id {
            self.unique_id(id, kind);
        }
        let prefix = format!("{kind} `{id_text}`: ");
        let type_node = node
            .get("type")
            .filter(|t| !matches!(t.value, NodeValue::Null));
        let problem = match type_node.map(|t| (t, &t.value)) {
            None if id.is_none() => Some((node, format!("a {kind} needs an `id` and a `type`"))),
            None => Some((
                node,
                format!("{prefix}missing the required property `type` (such as `type: {example}`)"),
            )),
            Some((_, NodeValue::String(type_name))) if is_known(type_name) => None,
            Some((t, NodeValue::String(type_name))) => {
                let names = known_names();
                let best = closest_names(type_name, names.into_iter());
                if id.is_none() {
                    self.report(node, format!("{prefix}missing the required property `id`"));
                }
                Some((
                    t,
                    format!(
                        "{prefix}unknown {kind} type `{type_name}`{}",
                        did_you_mean(&best)
                    ),
                ))
            }
            Some((t, _)) => Some((
                t,
                format!(
                    "{prefix}`type` must be a {kind} type name, got {}",
                    describe(t)
                ),
            )),
        };
        if let Some((at, message)) = problem {
            self.report(at, message);
            self.templates_in(node, true);
            return None;
        }
        let type_name = type_node
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_string();
        Some(PluginHead {
            entries,
            owner: Owner {
                prefix: prefix.clone(),
                path: String::new(),
                unknown: format!("for {kind} type `{type_name}`"),
                templates: true,
            },
            prefix,
            type_name,
        })
    }

    fn task(&mut self, node: &Node) {
        let before = self.diagnostics.len();
        let registry = self.registry;
        let Some(head) = self.plugin_head(
            node,
            "task",
            "io.kestra.plugin.core.log.Log",
            |t| registry.task(t).is_some(),
            || registry.task_type_names().collect(),
        ) else {
            return;
        };
        let Some(factory) = registry.task(&head.type_name) else {
            return;
        };
        let specs = combine(TASK_COMMON_PROPERTIES, factory.properties);
        self.properties(node, head.entries, &specs, &head.owner);
        if self.diagnostics.len() != before {
            return;
        }
        // Nothing wrong so far (children included): let the factory have its say.
        let prefix = head.prefix;
        if let Err(e) = (factory.build)(registry, &node.to_json()) {
            self.report(node, format!("{prefix}{e}"));
        }
        if let Some(retry) = node
            .get("retry")
            .filter(|r| !matches!(r.value, NodeValue::Null))
            && let Err(e) = RetryPolicy::from_json(&retry.to_json())
        {
            self.report(retry, format!("{prefix}{e}"));
        }
    }

    fn triggers(&mut self, node: &Node) {
        match &node.value {
            NodeValue::Null => {}
            NodeValue::Seq(items) => {
                for item in items {
                    self.trigger(item);
                }
            }
            _ => self.report(
                node,
                format!(
                    "`triggers` must be a list of triggers, got {}",
                    describe(node)
                ),
            ),
        }
    }

    fn trigger(&mut self, node: &Node) {
        let before = self.diagnostics.len();
        let registry = self.registry;
        let Some(head) = self.plugin_head(
            node,
            "trigger",
            "io.kestra.plugin.core.trigger.Schedule",
            |t| registry.trigger(t).is_some(),
            || registry.trigger_type_names().collect(),
        ) else {
            return;
        };
        let Some(factory) = registry.trigger(&head.type_name) else {
            return;
        };
        let mut specs = combine(TRIGGER_COMMON_PROPERTIES, factory.properties);
        if factory.realtime {
            specs.extend_from_slice(crate::realtime::REALTIME_PROPERTIES);
        }
        self.properties(node, head.entries, &specs, &head.owner);
        if self.diagnostics.len() == before
            && let Err(e) = (factory.build)(&node.to_json())
        {
            self.report(node, format!("{}{e}", head.prefix));
        }
    }

    /// Inputs beyond their schema: unique ids, text ids, defaults that fit the type.
    fn inputs(&mut self, node: &Node) {
        let Some(items) = node.as_seq() else { return };
        let mut seen: HashMap<String, usize> = HashMap::new();
        for input in items {
            let Some(id) = input.get("id") else { continue };
            self.text_id(id, "input");
            if matches!(
                id.value,
                NodeValue::Null | NodeValue::Seq(_) | NodeValue::Map(_)
            ) {
                continue;
            }
            let id_text = id.key_text();
            if let Some(first) = seen.get(&id_text) {
                self.report(
                    id,
                    format!("duplicate input id `{id_text}` (first at line {first})"),
                );
            } else {
                seen.insert(id_text.clone(), id.line);
            }
            let Some(input_type) = input.get("type").and_then(Node::as_str) else {
                continue;
            };
            let Some(defaults) = input
                .get("defaults")
                .filter(|d| !matches!(d.value, NodeValue::Null))
            else {
                continue;
            };
            if let NodeValue::String(s) = &defaults.value
                && (s.contains("{{") || s.contains("{%"))
            {
                continue;
            }
            let expected = match (input_type.to_ascii_uppercase().as_str(), &defaults.value) {
                ("INT", NodeValue::Int(_))
                | ("FLOAT", NodeValue::Int(_) | NodeValue::Float(_))
                | ("BOOLEAN", NodeValue::Bool(_))
                | ("JSON", _) => continue,
                ("STRING", v) if !matches!(v, NodeValue::Seq(_) | NodeValue::Map(_)) => continue,
                ("DATETIME", NodeValue::String(s))
                    if chrono::DateTime::parse_from_rfc3339(s).is_ok() =>
                {
                    continue;
                }
                ("INT", _) => "an integer",
                ("FLOAT", _) => "a number",
                ("BOOLEAN", _) => "`true` or `false`",
                ("STRING", _) => "text",
                ("DATETIME", _) => "an RFC 3339 date-time such as 2024-01-31T09:30:00Z",
                _ => continue,
            };
            self.report(
                defaults,
                format!(
                    "input `{id_text}`: `defaults` must be {expected} (the input's type is {}), got {}",
                    input_type.to_ascii_uppercase(),
                    describe(defaults)
                ),
            );
        }
    }

    /// Outputs beyond their schema: text ids.
    fn outputs(&mut self, node: &Node) {
        let Some(items) = node.as_seq() else { return };
        for output in items {
            if let Some(id) = output.get("id") {
                self.text_id(id, "output");
            }
        }
    }

    /// An input's or output's `id` must be text (a bare number is refused by the model).
    fn text_id(&mut self, id: &Node, what: &str) {
        if matches!(
            id.value,
            NodeValue::Bool(_) | NodeValue::Int(_) | NodeValue::Float(_)
        ) {
            let text = id.key_text();
            self.report(
                id,
                format!("{what} `id` must be text: quote it (`id: \"{text}\"`)"),
            );
        }
    }
}

/// The common properties, then the type's own (which win when both name a property).
fn combine(common: &[PropSpec], own: &[PropSpec]) -> Vec<PropSpec> {
    common
        .iter()
        .filter(|c| !own.iter().any(|o| o.name == c.name))
        .chain(own.iter())
        .copied()
        .collect()
}

/// " (did you mean `a`, `b` or `c`?)", or nothing when nothing is known.
fn did_you_mean(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => format!(" (did you mean {one}?)"),
        [init @ .., last] => format!(" (did you mean {} or {last}?)", init.join(", ")),
    }
}

/// "did you mean `x`?" when a known property is close, otherwise the list of properties.
fn property_hint(name: &str, known: &[&str]) -> String {
    let best = closest_names(name, known.iter().copied());
    if let Some(best) = best.first() {
        let distance = edit_distance(name, best);
        if distance <= 3 && distance < name.chars().count() {
            return format!("did you mean `{best}`?");
        }
    }
    format!("properties are {}", known.join(", "))
}

/// Case-insensitive Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How a value reads in a message.
fn describe(node: &Node) -> String {
    match &node.value {
        NodeValue::Null => "nothing (null)".into(),
        NodeValue::Bool(b) => format!("the boolean `{b}`"),
        NodeValue::Int(i) => format!("the integer `{i}`"),
        NodeValue::Float(_) => format!("the number `{}`", node.key_text()),
        NodeValue::String(s) => {
            let shown: String = s.chars().take(60).collect();
            let ellipsis = if shown.len() < s.len() { "…" } else { "" };
            format!("the string {:?}", format!("{shown}{ellipsis}"))
        }
        NodeValue::Seq(_) => "a list".into(),
        NodeValue::Map(_) => "a map".into(),
    }
}

const FLOW_ID_RULE: &str = "a flow id starts with a letter or digit and has only letters, \
     digits, `.`, `_` and `-`";
const NAMESPACE_RULE: &str = "a namespace is lowercase: it starts with a lowercase letter or \
     digit and has only lowercase letters, digits, `.`, `_` and `-` (such as `company.team`)";
const TASK_ID_RULE: &str = "an id starts with a letter or digit and has only letters, digits, \
     `_` and `-`";

/// `^[a-zA-Z0-9][a-zA-Z0-9._-]*$`
fn is_flow_id(s: &str) -> bool {
    matches_rule(
        s,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    )
}

/// `^[a-z0-9][a-z0-9._-]*$`
fn is_namespace(s: &str) -> bool {
    let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    matches_rule(s, lower, |c| lower(c) || matches!(c, '.' | '_' | '-'))
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`
fn is_task_id(s: &str) -> bool {
    matches_rule(
        s,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
    )
}

fn matches_rule(s: &str, first: impl Fn(char) -> bool, rest: impl Fn(char) -> bool) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(first) && chars.all(rest)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Map, Value};

    use super::*;
    use crate::flow::{Flow, builtin_trigger_factories, flowable_factories};
    use crate::model::LogLevel;
    use crate::registry::{RunContext, RunnableTask, TaskError, TaskFactory, TaskKind};

    struct Noop;

    #[async_trait::async_trait]
    impl RunnableTask for Noop {
        async fn run(&self, _ctx: &dyn RunContext) -> Result<Map<String, Value>, TaskError> {
            Ok(Map::new())
        }
    }

    const LOG_PROPERTIES: &[PropSpec] = &[
        PropSpec::required("message", PropType::StringOrList),
        PropSpec::optional(
            "level",
            PropType::Enum(&["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]),
        ),
    ];

    fn registry() -> Registry {
        let mut registry = Registry::new();
        for factory in flowable_factories() {
            registry.register_task(factory);
        }
        registry.register_task(TaskFactory {
            type_names: &[
                "io.kestra.plugin.core.log.Log",
                "io.kestra.core.tasks.log.Log",
            ],
            properties: LOG_PROPERTIES,
            build: |_, v| {
                if let Some(level) = v.get("level").and_then(Value::as_str) {
                    level.parse::<LogLevel>()?;
                }
                Ok(TaskKind::Runnable(Arc::new(Noop)))
            },
        });
        for factory in builtin_trigger_factories() {
            registry.register_trigger(factory);
        }
        registry
    }

    fn check(source: &str) -> Vec<Diagnostic> {
        let root = crate::yaml::parse(source).expect("test YAML parses");
        validate_flow(&root, &registry())
    }

    /// A flow with the given task list (indented by two spaces, starting at line 4).
    fn with_tasks(tasks: &str) -> String {
        format!("id: test\nnamespace: company.team\ntasks:\n{tasks}")
    }

    fn at(diagnostics: &[Diagnostic]) -> Vec<(usize, usize)> {
        diagnostics.iter().map(|d| (d.line, d.column)).collect()
    }

    #[test]
    fn three_mistakes_give_exactly_three_diagnostics() {
        let source = with_tasks(
            "  - id: first
    type: io.kestra.plugin.core.log.Logg
    message: hi
  - id: second
    type: io.kestra.plugin.core.log.Log
    mesage: hi
    message: hello
  - id: third
    type: io.kestra.plugin.core.log.Log
    message: x
    allowFailure: maybe
",
        );
        let d = check(&source);
        assert_eq!(at(&d), [(5, 11), (9, 5), (14, 19)], "{d:#?}");
        assert!(
            d[0].message.starts_with(
                "task `first`: unknown task type `io.kestra.plugin.core.log.Logg` (did you mean `io.kestra.plugin.core.log.Log`"
            ),
            "{}",
            d[0].message
        );
        assert_eq!(
            d[1].message,
            "task `second`: unknown property `mesage` for task type `io.kestra.plugin.core.log.Log` (did you mean `message`?)"
        );
        assert_eq!(
            d[2].message,
            "task `third`: `allowFailure` must be `true` or `false` (or a `{{ … }}` template), got the string \"maybe\""
        );
    }

    #[test]
    fn far_unknown_property_lists_the_allowed_ones() {
        let d = check(&with_tasks(
            "  - id: a\n    type: io.kestra.plugin.core.log.Log\n    message: x\n    colour: red\n",
        ));
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].message.contains("(properties are id, type, description, retry, timeout, allowFailure, disabled, message, level)"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn duplicate_task_ids_are_found_across_nesting() {
        let source = with_tasks(
            "  - id: outer
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - id: dup
        type: io.kestra.plugin.core.log.Log
        message: one
      - id: inner
        type: io.kestra.plugin.core.flow.Switch
        value: x
        cases:
          x:
            - id: dup
              type: io.kestra.plugin.core.log.Log
              message: two
  - id: outer
    type: io.kestra.plugin.core.log.Log
    message: three
errors:
  - id: dup
    type: io.kestra.plugin.core.log.Log
    message: four
",
        );
        let d = check(&source);
        assert_eq!(at(&d), [(15, 19), (18, 9), (22, 9)], "{d:#?}");
        assert_eq!(d[0].message, "duplicate task id `dup` (first at line 7)");
        assert_eq!(d[1].message, "duplicate task id `outer` (first at line 4)");
        assert_eq!(d[2].message, "duplicate task id `dup` (first at line 7)");
    }

    #[test]
    fn missing_required_property_is_reported_at_the_task() {
        let d = check(&with_tasks(
            "  - id: hello\n    type: io.kestra.plugin.core.log.Log\n    level: INFO\n",
        ));
        assert_eq!(at(&d), [(4, 5)], "{d:#?}");
        assert_eq!(
            d[0].message,
            "task `hello`: missing the required property `message`"
        );
    }

    #[test]
    fn bad_template_syntax_is_reported_at_the_string() {
        let source = "id: test
namespace: company.team
variables:
  ok: \"{{ inputs.a }}\"
  broken: \"{{ inputs.a \"
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message:
      - fine
      - \"{% if x %}no end\"
";
        let d = check(source);
        assert_eq!(at(&d), [(5, 11), (11, 9)], "{d:#?}");
        assert!(
            d.iter()
                .all(|d| d.message.starts_with("template does not parse: ")),
            "{d:#?}"
        );
    }

    #[test]
    fn descriptions_are_not_templates() {
        let d = check(&with_tasks(
            "  - id: a\n    type: io.kestra.plugin.core.log.Log\n    description: \"shows {{ how\"\n    message: x\n",
        ));
        assert!(d.is_empty(), "{d:#?}");
    }

    #[test]
    fn bad_timeout_duration() {
        let d = check(&with_tasks(
            "  - id: a\n    type: io.kestra.plugin.core.log.Log\n    message: x\n    timeout: 5 seconds\n",
        ));
        assert_eq!(at(&d), [(7, 14)], "{d:#?}");
        assert!(
            d[0].message
                .starts_with("task `a`: `timeout`: `5 seconds` is not an ISO-8601 duration"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn bad_retry_type_and_incomplete_retry() {
        let source = with_tasks(
            "  - id: a
    type: io.kestra.plugin.core.log.Log
    message: x
    retry:
      type: linear
      maxAttempts: 3
  - id: b
    type: io.kestra.plugin.core.log.Log
    message: x
    retry:
      type: constant
      interval: PT1S
      maxInterval: PT2S
  - id: c
    type: io.kestra.plugin.core.log.Log
    message: x
    retry:
      type: constant
      interval: PT1S
",
        );
        let d = check(&source);
        assert_eq!(at(&d), [(8, 13), (16, 7), (21, 7)], "{d:#?}");
        assert_eq!(
            d[0].message,
            "task `a`: `retry.type` must be one of constant, exponential, random, got the string \"linear\""
        );
        assert!(
            d[1].message
                .starts_with("task `b`: unknown property `maxInterval` in `retry` (did you mean"),
            "{}",
            d[1].message
        );
        // Schema-valid, but refused when built: reported at `retry`.
        assert_eq!(
            d[2].message,
            "task `c`: `retry` needs `maxAttempts` or `maxDuration`"
        );
    }

    #[test]
    fn bad_cron_and_time_zone_are_reported_at_the_trigger() {
        let source = with_tasks(
            "  - id: a
    type: io.kestra.plugin.core.log.Log
    message: x
triggers:
  - id: four_fields
    type: io.kestra.plugin.core.trigger.Schedule
    cron: \"*/5 * * *\"
  - id: out_of_range
    type: io.kestra.plugin.core.trigger.Schedule
    cron: \"61 * * * *\"
  - id: bad_zone
    type: io.kestra.plugin.core.trigger.Schedule
    cron: \"@daily\"
    timezone: Mars/Olympus
",
        );
        let d = check(&source);
        assert_eq!(at(&d), [(8, 5), (11, 5), (14, 5)], "{d:#?}");
        assert!(
            d[0].message
                .starts_with("trigger `four_fields`: cron `*/5 * * *` has 4 fields"),
            "{}",
            d[0].message
        );
        assert!(d[0].message.contains("`*/5 * * * *`"));
        assert!(
            d[1].message
                .starts_with("trigger `out_of_range`: cron `61 * * * *` is not valid"),
            "{}",
            d[1].message
        );
        assert_eq!(
            d[2].message,
            "trigger `bad_zone`: unknown time zone `Mars/Olympus` (use an IANA name such as Europe/Paris)"
        );
    }

    #[test]
    fn check_cron_accepts_five_or_six_fields_and_shortcuts() {
        for good in [
            "*/5 * * * *",
            "0 9 * * MON-FRI",
            "30 */5 * * * *",
            "@hourly",
            "@DAILY",
            "0 0 1 1 *",
        ] {
            assert!(check_cron(good).is_ok(), "{good}: {:?}", check_cron(good));
        }
        for bad in [
            "",
            "* * * *",
            "0 0 0 1 1 * 2030",
            "@sometimes",
            "* 25 * * *",
            "a b c d e",
        ] {
            let err = check_cron(bad).unwrap_err();
            assert!(err.contains("`*/5 * * * *`"), "{bad}: {err}");
        }
        assert!(check_timezone("Europe/Paris").is_ok());
        assert!(check_timezone("UTC").is_ok());
        assert!(check_timezone("Paris").is_err());
    }

    #[test]
    fn unknown_trigger_type_suggests_the_closest() {
        let source = with_tasks(
            "  - id: a
    type: io.kestra.plugin.core.log.Log
    message: x
triggers:
  - id: t
    type: io.kestra.plugin.core.trigger.Schedul
    cron: \"@daily\"
  - id: t
    type: io.kestra.plugin.core.trigger.Webhook
    key: k
",
        );
        let d = check(&source);
        assert_eq!(at(&d), [(9, 11), (11, 9)], "{d:#?}");
        assert!(
            d[0].message.starts_with(
                "trigger `t`: unknown trigger type `io.kestra.plugin.core.trigger.Schedul` (did you mean `io.kestra.plugin.core.trigger.Schedule`"
            ),
            "{}",
            d[0].message
        );
        assert_eq!(d[1].message, "duplicate trigger id `t` (first at line 8)");
    }

    #[test]
    fn nested_nodes_are_reported_where_they_are() {
        let source = with_tasks(
            "  - id: loop
    type: io.kestra.plugin.core.flow.ForEach
    values: [1, 2]
    tasks:
      - id: branch
        type: io.kestra.plugin.core.flow.If
        condition: \"{{ true }}\"
        then:
          - id: deep
            type: io.kestra.plugin.core.log.Log
            message: x
            level: LOUD
        else:
          - {id: flow-style, type: io.kestra.plugin.core.log.Log, message: [a, {b: c}]}
",
        );
        let d = check(&source);
        assert_eq!(at(&d), [(15, 20), (17, 80)], "{d:#?}");
        assert_eq!(
            d[0].message,
            "task `deep`: `level` must be one of TRACE, DEBUG, INFO, WARN, ERROR, got the string \"LOUD\""
        );
        assert_eq!(
            d[1].message,
            "task `flow-style`: the items of `message` must be text, got a map"
        );
    }

    #[test]
    fn quoted_numbers_are_strings_and_plain_ones_integers() {
        let tasks = |concurrent: &str| {
            with_tasks(&format!(
                "  - id: p\n    type: io.kestra.plugin.core.flow.Parallel\n    concurrent: {concurrent}\n    tasks:\n      - id: a\n        type: io.kestra.plugin.core.log.Log\n        message: 12\n"
            ))
        };
        assert!(check(&tasks("12")).is_empty());
        // A template passes the schema (the flowable's build wants a plain number, though).
        let d = check(&tasks("\"{{ inputs.n }}\""));
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].message.contains("must be a non-negative integer"),
            "{d:#?}"
        );
        let d = check(&tasks("\"12\""));
        assert_eq!(at(&d), [(6, 17)], "{d:#?}");
        assert_eq!(
            d[0].message,
            "task `p`: `concurrent` must be an integer (or a `{{ … }}` template), got the string \"12\" (write it without quotes: `concurrent: 12`)"
        );
        let d = check(&tasks("1.5"));
        assert!(d[0].message.ends_with("got the number `1.5`"), "{d:#?}");
        // Build-time checks run once the schema is satisfied.
        let d = check(&tasks("-1"));
        assert_eq!(at(&d), [(4, 5)], "{d:#?}");
        assert!(
            d[0].message
                .starts_with("task `p`: `concurrent` must be a non-negative integer"),
            "{d:#?}"
        );
    }

    #[test]
    fn flow_properties_ids_and_inputs() {
        let source = "id: my flow
namespace: Company.Team
variabels: 2
inputs:
  - id: n
    type: INT
    defaults: \"12\"
  - id: n
    type: datetime
    defaults: yesterday
  - id: t
    type: TEXT
  - id: ok
    type: BOOLEAN
    defaults: \"{{ now() }}\"
tasks: []
";
        let d = check(source);
        let messages: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            at(&d),
            [
                (1, 5),
                (2, 12),
                (3, 1),
                (7, 15),
                (8, 9),
                (10, 15),
                (12, 11),
                (16, 8)
            ],
            "{messages:#?}"
        );
        assert!(messages[0].starts_with("id `my flow` is not valid: a flow id starts with"));
        assert!(
            messages[1]
                .starts_with("namespace `Company.Team` is not valid: a namespace is lowercase")
        );
        assert_eq!(
            messages[2],
            "unknown property `variabels` of the flow (did you mean `variables`?)"
        );
        assert_eq!(
            messages[3],
            "input `n`: `defaults` must be an integer (the input's type is INT), got the string \"12\""
        );
        assert_eq!(messages[4], "duplicate input id `n` (first at line 5)");
        assert!(messages[5].contains("must be an RFC 3339 date-time"));
        assert!(
            messages[6]
                .starts_with("`type` must be one of STRING, INT, FLOAT, BOOLEAN, JSON, DATETIME")
        );
        assert_eq!(messages[7], "at least one task in `tasks` is required");
    }

    #[test]
    fn root_must_be_a_map_and_required_flow_properties_present() {
        let d = validate_flow(&crate::yaml::parse("- a\n- b\n").unwrap(), &registry());
        assert_eq!(d.len(), 1);
        assert!(d[0].message.starts_with("a flow must be a map"));
        let d = check("id: x\ndescription: nothing to do\n");
        assert_eq!(at(&d), [(1, 1), (1, 1)], "{d:#?}");
        assert_eq!(d[0].message, "missing the required property `namespace`");
        assert_eq!(d[1].message, "missing the required property `tasks`");
        let d = check(
            "id: 12\nnamespace: a\ntasks:\n  - id: t\n    type: io.kestra.plugin.core.log.Log\n    message: x\n",
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "`id` must be text: quote it (`id: \"12\"`)");
    }

    #[test]
    fn unknown_properties_of_nested_objects_name_their_object() {
        let source = "id: x
namespace: y
inputs:
  - id: when
    type: STRING
    color: red
concurrency: {limit: 2, behaviour: FAIL}
tasks:
  - id: a
    type: io.kestra.plugin.core.log.Log
    message: x
";
        let d = check(source);
        assert_eq!(at(&d), [(6, 5), (7, 25)], "{d:#?}");
        assert_eq!(
            d[0].message,
            "unknown property `color` in the `inputs` entry `when` (properties are id, type, description, defaults, required, displayName)"
        );
        assert_eq!(
            d[1].message,
            "unknown property `behaviour` in `concurrency` (did you mean `behavior`?)"
        );
    }

    #[test]
    fn tasks_without_type_or_with_bad_ids() {
        let d = check(&with_tasks(
            "  - id: a b\n    type: io.kestra.plugin.core.log.Log\n    message: x\n  - id: notype\n    message: y\n  - just text\n",
        ));
        assert_eq!(at(&d), [(4, 9), (7, 5), (9, 5)], "{d:#?}");
        assert!(d[0].message.starts_with("task id `a b` is not valid"));
        assert!(
            d[1].message
                .starts_with("task `notype`: missing the required property `type`")
        );
        assert!(d[2].message.starts_with("a task must be a map"));
    }

    const REALISTIC: &str = r#"id: orders-pipeline
namespace: company.sales
description: Routes, loops over and reports orders.
labels:
  team: sales
inputs:
  - id: batch
    type: INT
    defaults: 10
  - id: mode
    type: STRING
    defaults: fast
  - id: since
    type: DATETIME
    defaults: "2024-01-31T09:30:00Z"
  - id: verbose
    type: BOOLEAN
    defaults: false
  - id: ratio
    type: FLOAT
    defaults: 0.5
variables:
  greeting: "Hello {{ inputs.mode }}"
concurrency:
  limit: 2
  behavior: QUEUE
tasks:
  - id: route
    type: io.kestra.plugin.core.flow.Switch
    value: "{{ inputs.mode }}"
    cases:
      fast:
        - id: fast_log
          type: io.kestra.plugin.core.log.Log
          message: "fast {{ vars.greeting }}"
      slow:
        - id: slow_log
          type: io.kestra.core.tasks.log.Log
          message:
            - slow
            - "{{ inputs.batch }}"
    defaults:
      - id: default_log
        type: io.kestra.plugin.core.log.Log
        message: default
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: ["a", "b", "c"]
    concurrencyLimit: 2
    tasks:
      - id: check
        type: io.kestra.plugin.core.flow.If
        condition: "{{ taskrun.value == 'a' }}"
        then:
          - id: parallel
            type: io.kestra.plugin.core.flow.Parallel
            concurrent: 2
            tasks:
              - id: p1
                type: io.kestra.plugin.core.log.Log
                message: "{{ trigger.value | jq('.a') | first }}"
                level: warn
              - id: p2
                type: io.kestra.plugin.core.log.Log
                message: "{% for x in [1, 2] %}{{ x }}{% endfor %}"
        else:
          - id: other
            type: io.kestra.plugin.core.log.Log
            message: not a
  - id: flaky
    type: io.kestra.plugin.core.log.Log
    message: may fail
    timeout: PT1M
    allowFailure: true
    retry:
      type: exponential
      interval: PT1S
      maxInterval: PT10S
      maxAttempts: 3
      delayFactor: 2.5
  - id: child
    type: io.kestra.plugin.core.flow.Subflow
    namespace: company.sales
    flowId: child-flow
    inputs:
      batch: "{{ inputs.batch }}"
    wait: true
errors:
  - id: on_error
    type: io.kestra.plugin.core.log.Log
    message: "failed: {{ execution.id }}"
    level: ERROR
triggers:
  - id: nightly
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "0 2 * * *"
    timezone: Europe/Paris
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: secret-key
outputs:
  - id: result
    type: STRING
    value: "{{ outputs.flaky }}"
"#;

    #[test]
    fn realistic_flow_is_valid_and_builds() {
        let d = check(REALISTIC);
        assert!(d.is_empty(), "{d:#?}");
        let registry = registry();
        let flow = Flow::parse(REALISTIC, &registry).expect("the flow builds");
        assert_eq!(flow.id, "orders-pipeline");
        assert_eq!(flow.all_tasks().len(), 13);
        assert_eq!(flow.triggers.len(), 2);
        assert_eq!(flow.inputs.len(), 5);
    }
}
