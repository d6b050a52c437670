// DemoJob: the built-in demo, four real 28×28 image tasks on one pre-trained backbone with OrthoReg.

enum DemoJob {
    /// The demo's knobs: which backbone, which fine-tuning mode, how strong OrthoReg is.
    struct Options {
        var dataDirectory = "data"
        var output = "runs/demo"
        /// "mlp" (784-256-256) or "vit" (patch 7, width 64, depth 4, 4 heads, timm layout).
        var model = "mlp"
        var mode = "full"
        var orthoRegLambda = 1.0
        var orthoRegForm = "offdiagonal"
        var steps = 1000
    }

    /// The demo as a two-cell sweep: the job without OrthoReg and with it, on the same θ0, heads and
    /// data streams, so the results table can set them side by side.
    static func sweepYAML(_ options: Options) -> String {
        let job = yaml(options).split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.isEmpty ? "" : "  " + $0 }.joined(separator: "\n")
        return """
            name: demo
            output: \(options.output)
            job:
            \(job)
            axes:
              finetune.orthoreg:
                without: {lambda: 0}
                with: {lambda: \(options.orthoRegLambda), form: \(options.orthoRegForm)}

            """
    }

    /// The job text. θ0 is pre-trained on a 40-way joint task over 5 % of the four training sets
    /// (300 steps), so the frozen linear-probe heads stay clearly below fine-tuned accuracy and
    /// merging has something to lose or keep.
    static func yaml(_ options: Options) -> String {
        let data = options.dataDirectory
        let model = options.model == "vit"
            ? "{arch: vit, input: [1, 28, 28], patch: 7, width: 64, depth: 4, heads: 4, mlp_ratio: 4}"
            : "{arch: mlp, input: [784], hidden: [256, 256], activation: relu}"
        // A ViT trains well at a smaller learning rate than the MLP.
        let rate = options.model == "vit" ? "5.0e-4" : "1.0e-3"
        let lora = options.mode == "lora" ? "\n  lora: {rank: 8, alpha: 8}" : ""
        return """
            name: demo
            seed: 1993
            model: \(model)
            pretrain:
              fraction: 0.05
              steps: 300
              batch_size: 128
              optimizer: {name: adamw, lr: \(rate), weight_decay: 0.1}
            tasks:
              - {name: mnist, classes: 10, train: \(data)/mnist/train.npz, test: \(data)/mnist/test.npz}
              - {name: fashion_mnist, classes: 10, train: \(data)/fashion_mnist/train.npz, test: \(data)/fashion_mnist/test.npz}
              - {name: animal_mnist, classes: 10, train: \(data)/animal_mnist/train.npz, test: \(data)/animal_mnist/test.npz}
              - {name: digits, classes: 10, train: \(data)/digits/train.npz, test: \(data)/digits/test.npz}
            finetune:
              mode: \(options.mode)\(lora)
              steps: \(options.steps)
              batch_size: 128
              optimizer: {name: adamw, lr: \(rate), weight_decay: 0.1}
              schedule: {warmup_steps: 100, decay: cosine}
              grad_clip: 1.0
            head: {steps: 300, batch_size: 256, optimizer: {name: adamw, lr: 1.0e-2, weight_decay: 0.0}}
            merge:
              methods: [task_arithmetic]
              alpha: {from: 0.0, to: 1.0, count: 21}

            """
    }
}
