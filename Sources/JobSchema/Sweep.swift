// Sweep: a sweep file (a base job plus axes over its keys) expanded into cells, one job each.
//
// A sweep file:
//   name: map-mlp                       # names the summary; [A-Za-z0-9_.-]
//   job: jobs/base.yaml                 # the base job: a job file (relative to this file) or an inline mapping
//   output: runs/map-mlp                # default runs/<name>; cell c writes <output>/cells/<c>
//   suite: tasks4                       # the summary's `suite` column unless an axis on `tasks` names it
//   set: {merge.methods: [task_arithmetic]}   # optional: key paths set in every cell, not in its name
//   axes:                               # crossed with each other (first axis outermost)
//     seed: [1, 2, 3]
//     finetune.optimizer.lr: [1.0e-3, 1.0e-4]
//     tasks: {tasks4: [...], tasks8: [...]}     # named values: the name labels the cell
//   grids:                              # optional: a union of further crossings, each crossed with `axes`
//     - {finetune.orthoreg.lambda: [0]}
//     - {finetune.orthoreg.lambda: [0.1, 1, 10], finetune.orthoreg.form: [frobenius, offdiagonal, l2]}
// A key path names nested mapping keys (missing mappings are created); its value replaces
// whatever the base job had there. Each cell's job is then checked like any job file.
import Core
import Foundation
import Yams

public struct Sweep {
    /// One value of an axis: its label in cell names and the YAML it sets.
    public struct Value: Equatable {
        public var label: String
        public var node: Node
    }

    public struct Axis: Equatable {
        /// The key path, e.g. ["finetune", "orthoreg", "lambda"].
        public var path: [String]
        public var values: [Value]
        public var key: String { path.joined(separator: ".") }
    }

    /// One job of the sweep.
    public struct Cell: Equatable {
        /// `form=l2,lambda=1,seed=2`: the axes' short names and value labels; also the folder name.
        public var id: String
        /// (axis key, value label) in axis order.
        public var assignments: [Assignment]
        /// The base job with this cell's values set (its `output` not yet).
        public var job: Node
        /// Where the cell runs unless told otherwise: `<sweep output>/cells/<id>`.
        public var output: URL

        public struct Assignment: Sendable, Equatable {
            public var key: String
            public var label: String
        }

        /// The cell's job text, writing to `output` (the cell's own folder by default).
        public func jobText(output: URL? = nil) throws -> String {
            guard var mapping = job.mapping else { preconditionFailure("a cell's job is a mapping") }
            mapping["output"] = Node((output ?? self.output).path)
            do {
                return try Yams.serialize(node: .mapping(mapping))
            } catch {
                throw OrthofuseError("cell \(id): cannot write its job as YAML: \(error)")
            }
        }
    }

    public static let maximumCells = 10_000
    public static let maximumFileSize = 1 << 20

    public let name: String
    public let origin: String
    /// Relative paths in the base job resolve here (the sweep file's directory, or the base job file's).
    public let baseDirectory: URL
    public let output: URL
    public let suite: String?
    public let cells: [Cell]

    /// Reads and expands the sweep file at `url`.
    public static func load(_ url: URL) throws -> Sweep {
        let origin = url.lastPathComponent
        let text = try FileBytes.readText(url, origin: origin, limit: maximumFileSize, kind: "sweep file")
        return try parse(text, origin: origin, baseDirectory: url.deletingLastPathComponent().standardizedFileURL)
    }

    /// Expands the sweep text; every failure is one line naming `origin` and the key.
    public static func parse(_ text: String, origin: String, baseDirectory given: URL) throws -> Sweep {
        let baseDirectory = URL(fileURLWithPath: given.path, isDirectory: true)
        func fail(_ key: String, _ message: String) -> OrthofuseError {
            OrthofuseError(key.isEmpty ? "\(origin): \(message)" : "\(origin): \(key): \(message)")
        }
        let root: Node
        do {
            guard let document = try Yams.compose(yaml: text) else { throw fail("", "empty sweep file") }
            root = document
        } catch let error as YamlError {
            throw fail("", "not valid YAML: " + "\(error)".split(separator: "\n").joined(separator: " "))
        }
        guard let top = root.mapping else { throw fail("", "must be a mapping (name, job, axes, grids, output, suite)") }
        let allowed = ["name", "job", "set", "axes", "grids", "output", "suite"]
        for key in top.keys {
            guard let word = key.string, allowed.contains(word) else {
                throw fail(key.string ?? "\(key)", "unknown key (allowed: \(allowed.joined(separator: ", ")))")
            }
        }
        guard let name = top["name"]?.string, JobName.violation(name) == nil else {
            throw fail("name", "required, must match [A-Za-z0-9_.-]+ (at most \(JobName.maximumLength) characters)")
        }
        var (job, jobDirectory) = try baseJob(top["job"], origin: origin, baseDirectory: baseDirectory, fail: fail)
        // `set`: values for every cell, kept out of the cell names.
        if let fixed = top["set"] {
            guard let mapping = fixed.mapping else { throw fail("set", "must be a mapping of key paths to values") }
            for pair in mapping {
                guard let path = pair.key.string, path != "output" else { throw fail("set", "a key must be a key path other than output") }
                job = try setting(path.split(separator: ".").map(String.init)[...], to: pair.value, in: job,
                                  key: "set.\(path)", fail: fail)
            }
        }
        let axes = try top["axes"].map { try parseAxes($0, key: "axes", fail: fail) } ?? []
        var grids: [[Axis]] = []
        if let node = top["grids"] {
            guard let list = node.sequence, !list.isEmpty else { throw fail("grids", "must be a non-empty list of axis mappings") }
            grids = try list.enumerated().map { try parseAxes($1, key: "grids[\($0)]", fail: fail) }
        }
        if axes.isEmpty && grids.isEmpty { throw fail("axes", "required: at least one axis (or grids)") }
        for grid in grids {
            if let shared = grid.first(where: { axis in axes.contains { $0.key == axis.key } }) {
                throw fail("grids", "\(shared.key) is already an axis of `axes`")
            }
        }
        let outputText = top["output"]?.string ?? "runs/\(name)"
        let output = URL(fileURLWithPath: outputText, relativeTo: baseDirectory).standardizedFileURL
        let suite = top["suite"]?.string

        var cells: [Cell] = []
        var seen: [String: Int] = [:]
        for grid in grids.isEmpty ? [[]] : grids {
            let crossed = axes + grid
            let shortNames = shortKeys(crossed.map(\.path))
            let count = crossed.reduce(1) { $0 * $1.values.count }
            guard cells.count + count <= maximumCells else {
                throw fail("axes", "more than \(maximumCells) cells")
            }
            for combination in 0..<count {
                var remainder = combination
                var chosen = [Value](repeating: Value(label: "", node: Node("")), count: crossed.count)
                for index in crossed.indices.reversed() {
                    chosen[index] = crossed[index].values[remainder % crossed[index].values.count]
                    remainder /= crossed[index].values.count
                }
                var cellJob = job
                for (axis, value) in zip(crossed, chosen) {
                    cellJob = try setting(axis.path[...], to: value.node, in: cellJob, key: axis.key, fail: fail)
                }
                let id = zip(shortNames, chosen).map { "\($0)=\($1.label)" }.joined(separator: ",")
                guard id.count <= 200 else { throw fail("axes", "cell name \(id.prefix(40))… is longer than 200 characters; shorten the value labels") }
                if let earlier = seen[id] {
                    throw fail("grids", "cell \(id) appears twice (cells \(earlier) and \(cells.count))")
                }
                seen[id] = cells.count
                cells.append(Cell(id: id, assignments: zip(crossed, chosen).map { Cell.Assignment(key: $0.key, label: $1.label) },
                                  job: cellJob, output: output.appendingPathComponent("cells").appendingPathComponent(id)))
            }
        }
        return Sweep(name: name, origin: origin, baseDirectory: jobDirectory, output: output, suite: suite, cells: cells)
    }

    /// Checks every cell's job as `orthofuse run` would (keys, values, files), naming the cell.
    public func checkJobs() throws -> [JobConfig] {
        // Every cell's keys and values first, then the files: a typo in one value is reported as such.
        let configs = try cells.map { cell in
            try JobConfig.parse(try cell.jobText(), origin: cellOrigin(cell), baseDirectory: baseDirectory)
        }
        // Their paths carry the cell's origin (cellOrigin), so these errors name the cell already.
        for config in configs { try config.checkFiles() }
        return configs
    }

    /// How messages name a cell's job: `sweep.yaml cell form=l2,lambda=1`.
    public func cellOrigin(_ cell: Cell) -> String { "\(origin) cell \(cell.id)" }

    public func cell(named id: String) throws -> Cell {
        guard let cell = cells.first(where: { $0.id == id }) else {
            let sample = cells.prefix(3).map(\.id).joined(separator: "; ")
            throw OrthofuseError("\(origin): no cell named \(id) (\(cells.count) cells, e.g. \(sample); `orthofuse sweep \(origin) --list` lists them)")
        }
        return cell
    }

    // MARK: Parsing helpers

    private static func baseJob(_ node: Node?, origin: String, baseDirectory: URL,
                                fail: (String, String) -> OrthofuseError) throws -> (Node, URL) {
        guard let node else { throw fail("job", "required: a job file or an inline job mapping") }
        if node.mapping != nil { return (node, baseDirectory) }
        guard let path = node.string else { throw fail("job", "must be a job file path or a mapping") }
        let url = URL(fileURLWithPath: path, relativeTo: baseDirectory).standardizedFileURL
        let text: String
        do {
            text = try FileBytes.readText(url, origin: path, limit: JobConfig.maximumFileSize, kind: "job file")
        } catch {
            throw fail("job", "\(error)")
        }
        let parsed: Node?
        do {
            parsed = try Yams.compose(yaml: text)
        } catch {
            throw fail("job", "\(path): not valid YAML")
        }
        guard let parsed, parsed.mapping != nil else { throw fail("job", "\(path): must hold a mapping of job settings") }
        return (parsed, URL(fileURLWithPath: url.deletingLastPathComponent().path, isDirectory: true))
    }

    private static func parseAxes(_ node: Node, key: String, fail: (String, String) -> OrthofuseError) throws -> [Axis] {
        guard let mapping = node.mapping, !mapping.isEmpty else {
            throw fail(key, "must be a mapping of key paths to value lists")
        }
        return try mapping.map { pair in
            guard let pathText = pair.key.string else { throw fail(key, "an axis key must be a key path") }
            let axisKey = "\(key).\(pathText)"
            let path = pathText.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard path.allSatisfy({ !$0.isEmpty && $0.unicodeScalars.allSatisfy { CharacterSet.lowercaseLetters.contains($0) || $0 == "_" || CharacterSet.decimalDigits.contains($0) } }) else {
                throw fail(axisKey, "must be a dotted path of job keys (e.g. finetune.orthoreg.lambda)")
            }
            guard path != ["output"] else { throw fail(axisKey, "the sweep sets each cell's output itself") }
            var values: [Value] = []
            if let list = pair.value.sequence, !list.isEmpty {
                values = try list.enumerated().map { index, item in
                    guard let label = valueLabel(item) else {
                        throw fail("\(axisKey)[\(index)]", "a structured value needs a name: write the axis as a mapping {name: value}")
                    }
                    return Value(label: label, node: item)
                }
            } else if let named = pair.value.mapping, !named.isEmpty {
                values = try named.map { entry in
                    guard let label = entry.key.string, JobName.violation(label) == nil else {
                        throw fail(axisKey, "a value name must match [A-Za-z0-9_.-]+")
                    }
                    return Value(label: label, node: entry.value)
                }
            } else {
                throw fail(axisKey, "must be a non-empty list of values or a mapping of named values")
            }
            if let index = StrictDecoding.firstRepeatedIndex(values.map(\.label)) {
                throw fail(axisKey, "the value \(values[index].label) appears twice")
            }
            return Axis(path: path, values: values)
        }
    }

    /// A scalar's text, or a list of scalars joined by "x" ([1024, 1024] → 1024x1024); nil for
    /// anything structured. Characters unsafe in a folder name become "_".
    static func valueLabel(_ node: Node) -> String? {
        let text: String
        if let scalar = node.scalar {
            text = scalar.string
        } else if let list = node.sequence, !list.isEmpty, list.allSatisfy({ $0.scalar != nil }) {
            text = list.compactMap(\.scalar?.string).joined(separator: "x")
        } else {
            return nil
        }
        guard !text.isEmpty else { return nil }
        return String(text.unicodeScalars.map { scalar -> Character in
            switch scalar {
            case "A"..."Z", "a"..."z", "0"..."9", "_", ".", "-", "+": Character(scalar)
            default: "_"
            }
        })
    }

    /// The last path component of each key, or the whole dotted path where two would collide.
    static func shortKeys(_ paths: [[String]]) -> [String] {
        let lasts = paths.map { $0.last ?? "" }
        return paths.indices.map { index in
            lasts.filter { $0 == lasts[index] }.count > 1 ? paths[index].joined(separator: ".") : lasts[index]
        }
    }

    private static func setting(_ path: ArraySlice<String>, to value: Node, in node: Node, key: String,
                                fail: (String, String) -> OrthofuseError) throws -> Node {
        guard let first = path.first else { return value }
        guard var mapping = node.mapping else {
            throw fail(key, "the base job has a value that is not a mapping where the path needs one")
        }
        let child = mapping[first] ?? Node.mapping(Node.Mapping([]))
        mapping[first] = try setting(path.dropFirst(), to: value, in: child, key: key, fail: fail)
        return .mapping(mapping)
    }
}
