//! The dependency graph of the garbage collector: every object that names
//! owners (`metadata.owners`), and for every owner the objects that name it
//! (its dependents).
//!
//! Nodes are [`ResourceRef`]s compared by all four fields (api, kind,
//! namespace, name); the collector normalizes them first (a global kind has
//! no namespace, see [`normalize`]). An owner reference to an object that
//! does not exist is kept as an edge but leads nowhere: whether a node
//! exists is the stores' business, not the graph's.
//!
//! Cycles are strongly connected components (SCC): [`DependencyGraph::component`]
//! gives the SCC of one node (cheaply: a node's component lies within its
//! ancestors), [`DependencyGraph::cycles`] every cycle of the graph (Tarjan,
//! iterative, so long chains do not exhaust the stack).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use krake_data::metadata::{Metadata, ResourceRef};
use krake_data::registry;

/// `reference` as the graph keys it: the namespace dropped when it names a
/// global kind of the registry. A reference to an unknown kind is kept as
/// it is (it never matches an object).
pub fn normalize(reference: &ResourceRef) -> ResourceRef {
    let global = registry::ALL
        .iter()
        .any(|k| k.api == reference.api && k.kind == reference.kind && !k.is_namespaced());
    let mut reference = reference.clone();
    if global {
        reference.namespace = None;
    }
    reference
}

/// The owners of `metadata`, normalized, without duplicates, in their order.
pub fn owners_of(metadata: &Metadata) -> Vec<ResourceRef> {
    let mut owners: Vec<ResourceRef> = Vec::with_capacity(metadata.owners.len());
    for owner in metadata.owners.iter().map(normalize) {
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }
    owners
}

/// Owner → dependents, and dependent → owners. See the [module](self) docs.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    /// Every node that has owners, with them.
    owners: HashMap<ResourceRef, Vec<ResourceRef>>,
    /// Every owner named by some node, with the nodes naming it.
    dependents: HashMap<ResourceRef, BTreeSet<ResourceRef>>,
}

impl DependencyGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the owners of `node` (an empty list removes it); returns its
    /// previous owners.
    pub fn set(&mut self, node: ResourceRef, owners: Vec<ResourceRef>) -> Vec<ResourceRef> {
        let old = self.remove(&node);
        if owners.is_empty() {
            return old;
        }
        for owner in &owners {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(node.clone());
        }
        self.owners.insert(node, owners);
        old
    }

    /// Forgets `node` (it was removed); returns its previous owners.
    pub fn remove(&mut self, node: &ResourceRef) -> Vec<ResourceRef> {
        let old = self.owners.remove(node).unwrap_or_default();
        for owner in &old {
            if let Some(dependents) = self.dependents.get_mut(owner) {
                dependents.remove(node);
                if dependents.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        old
    }

    /// The nodes that have owners.
    pub fn nodes(&self) -> impl Iterator<Item = &ResourceRef> {
        self.owners.keys()
    }

    /// How many nodes have owners.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when no node has owners.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The owners of `node`.
    pub fn owners(&self, node: &ResourceRef) -> &[ResourceRef] {
        self.owners.get(node).map(Vec::as_slice).unwrap_or_default()
    }

    /// The direct dependents of `node` (the nodes naming it as an owner).
    pub fn dependents(&self, node: &ResourceRef) -> Vec<ResourceRef> {
        self.dependents
            .get(node)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The strongly connected component of `node`: the nodes that are both
    /// dependents (transitively) and owners (transitively) of it, and
    /// `node` itself. `{node}` alone when it is on no cycle.
    pub fn component(&self, node: &ResourceRef) -> BTreeSet<ResourceRef> {
        // Ancestors first (usually a handful): the component lies within.
        let mut ancestors = HashSet::new();
        let mut todo = VecDeque::from([node.clone()]);
        while let Some(next) = todo.pop_front() {
            for owner in self.owners(&next) {
                if ancestors.insert(owner.clone()) {
                    todo.push_back(owner.clone());
                }
            }
        }
        let mut component = BTreeSet::from([node.clone()]);
        if !ancestors.contains(node) {
            return component;
        }
        // A path between two members stays within the component, so the
        // search may stay within the ancestors.
        let mut todo = VecDeque::from([node.clone()]);
        while let Some(next) = todo.pop_front() {
            for dependent in self.dependents.get(&next).into_iter().flatten() {
                if ancestors.contains(dependent) && component.insert(dependent.clone()) {
                    todo.push_back(dependent.clone());
                }
            }
        }
        component
    }

    /// True if `component` is a cycle: more than one node, or one node that
    /// owns itself.
    pub fn is_cycle(&self, component: &BTreeSet<ResourceRef>) -> bool {
        match component.len() {
            0 => false,
            1 => component
                .iter()
                .all(|node| self.owners(node).contains(node)),
            _ => true,
        }
    }

    /// The dependents of the members of `component` that are not members:
    /// what the component as a whole waits for.
    pub fn external_dependents(&self, component: &BTreeSet<ResourceRef>) -> Vec<ResourceRef> {
        let mut external = BTreeSet::new();
        for member in component {
            for dependent in self.dependents.get(member).into_iter().flatten() {
                if !component.contains(dependent) {
                    external.insert(dependent.clone());
                }
            }
        }
        external.into_iter().collect()
    }

    /// Every cycle of the graph (Tarjan's strongly connected components of
    /// more than one node, or of one node owning itself), each sorted, in
    /// sorted order.
    pub fn cycles(&self) -> Vec<Vec<ResourceRef>> {
        // Only nodes with owners can be on a cycle; sorted for a stable result.
        let mut nodes: Vec<&ResourceRef> = self.owners.keys().collect();
        nodes.sort();
        let mut index: HashMap<&ResourceRef, usize> = HashMap::new();
        let mut low: HashMap<&ResourceRef, usize> = HashMap::new();
        let mut on_stack: HashSet<&ResourceRef> = HashSet::new();
        let mut stack: Vec<&ResourceRef> = Vec::new();
        let mut next_index = 0usize;
        let mut cycles = Vec::new();
        let successors = |node: &ResourceRef| -> Vec<&ResourceRef> {
            self.dependents
                .get(node)
                .map(|d| d.iter().collect())
                .unwrap_or_default()
        };
        for &root in &nodes {
            if index.contains_key(root) {
                continue;
            }
            // The DFS path: a node and the successors still to visit.
            let mut path: Vec<(&ResourceRef, Vec<&ResourceRef>)> = Vec::new();
            index.insert(root, next_index);
            low.insert(root, next_index);
            next_index += 1;
            stack.push(root);
            on_stack.insert(root);
            path.push((root, successors(root)));
            while let Some((node, pending)) = path.last_mut() {
                let node = *node;
                if let Some(successor) = pending.pop() {
                    if !index.contains_key(successor) {
                        index.insert(successor, next_index);
                        low.insert(successor, next_index);
                        next_index += 1;
                        stack.push(successor);
                        on_stack.insert(successor);
                        path.push((successor, successors(successor)));
                    } else if on_stack.contains(successor) {
                        let lowest = low[node].min(index[successor]);
                        low.insert(node, lowest);
                    }
                    continue;
                }
                path.pop();
                if let Some((parent, _)) = path.last() {
                    let lowest = low[*parent].min(low[node]);
                    low.insert(*parent, lowest);
                }
                if low[node] == index[node] {
                    let mut component = BTreeSet::new();
                    while let Some(member) = stack.pop() {
                        on_stack.remove(member);
                        component.insert(member.clone());
                        if member == node {
                            break;
                        }
                    }
                    if self.is_cycle(&component) {
                        cycles.push(component.into_iter().collect());
                    }
                }
            }
        }
        cycles.sort();
        cycles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> ResourceRef {
        ResourceRef::new("core", "Role", None, name)
    }

    fn graph(edges: &[(&str, &[&str])]) -> DependencyGraph {
        let mut graph = DependencyGraph::new();
        for (node, owners) in edges {
            graph.set(role(node), owners.iter().map(|o| role(o)).collect());
        }
        graph
    }

    fn names(nodes: impl IntoIterator<Item = ResourceRef>) -> Vec<String> {
        nodes.into_iter().map(|n| n.name).collect()
    }

    #[test]
    fn dependents_follow_owner_changes_and_removals() {
        let mut g = graph(&[("b", &["a"]), ("c", &["a", "b"])]);
        assert_eq!(names(g.dependents(&role("a"))), ["b", "c"]);
        assert_eq!(names(g.dependents(&role("b"))), ["c"]);
        let old = g.set(role("c"), vec![role("b")]);
        assert_eq!(names(old), ["a", "b"]);
        assert_eq!(names(g.dependents(&role("a"))), ["b"]);
        assert_eq!(names(g.remove(&role("b"))), ["a"]);
        assert!(g.dependents(&role("a")).is_empty());
        assert_eq!(g.len(), 1);
        g.set(role("c"), vec![]);
        assert!(g.is_empty());
        assert!(g.dependents(&role("b")).is_empty());
    }

    #[test]
    fn components_and_cycles() {
        // a -> b -> c -> a (a 3-cycle), c -> d (outside), e -> f -> e, g owns g.
        let g = graph(&[
            ("b", &["a"]),
            ("c", &["b"]),
            ("a", &["c"]),
            ("d", &["c"]),
            ("f", &["e"]),
            ("e", &["f"]),
            ("g", &["g"]),
            ("h", &["nobody"]),
        ]);
        assert_eq!(names(g.component(&role("b"))), ["a", "b", "c"]);
        assert_eq!(names(g.component(&role("d"))), ["d"]);
        assert!(!g.is_cycle(&g.component(&role("d"))));
        assert!(g.is_cycle(&g.component(&role("g"))));
        assert_eq!(
            names(g.external_dependents(&g.component(&role("a")))),
            ["d"]
        );
        let cycles: Vec<Vec<String>> = g.cycles().into_iter().map(names).collect();
        assert_eq!(cycles, [vec!["a", "b", "c"], vec!["e", "f"], vec!["g"]]);
    }

    #[test]
    fn a_long_chain_has_no_cycle_and_does_not_overflow() {
        let mut g = DependencyGraph::new();
        for i in 1..50_000 {
            g.set(role(&format!("n{i}")), vec![role(&format!("n{}", i - 1))]);
        }
        assert!(g.cycles().is_empty());
        g.set(role("n0"), vec![role("n49999")]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), 50_000);
    }

    #[test]
    fn global_owner_refs_lose_their_namespace() {
        let reference = ResourceRef::new("core", "Role", Some("ns".into()), "r");
        assert_eq!(normalize(&reference).namespace, None);
        let cluster = ResourceRef::new("kubernetes", "Cluster", Some("ns".into()), "c");
        assert_eq!(normalize(&cluster), cluster);
        let mut metadata = Metadata::named("x");
        metadata.owners = vec![reference.clone(), role("r"), cluster.clone()];
        assert_eq!(owners_of(&metadata), [role("r"), cluster]);
    }
}
