// DemoJob: the built-in demo, four real 28×28 image tasks on one pre-trained MLP with OrthoReg.

enum DemoJob {
    /// The job text with the data and output directories filled in. θ0 is pre-trained on a
    /// 40-way joint task over 5 % of the four training sets (300 steps), so the frozen linear-probe heads
    /// stay clearly below fine-tuned accuracy and merging has something to lose or keep.
    static func yaml(dataDirectory: String, output: String, orthoRegLambda: Double = 1.0) -> String {
        """
        name: demo
        seed: 1993
        model: {arch: mlp, input: [784], hidden: [256, 256], activation: relu}
        pretrain:
          fraction: 0.05
          steps: 300
          batch_size: 128
          optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.1}
        tasks:
          - {name: mnist, classes: 10, train: \(dataDirectory)/mnist/train.npz, test: \(dataDirectory)/mnist/test.npz}
          - {name: fashion_mnist, classes: 10, train: \(dataDirectory)/fashion_mnist/train.npz, test: \(dataDirectory)/fashion_mnist/test.npz}
          - {name: animal_mnist, classes: 10, train: \(dataDirectory)/animal_mnist/train.npz, test: \(dataDirectory)/animal_mnist/test.npz}
          - {name: digits, classes: 10, train: \(dataDirectory)/digits/train.npz, test: \(dataDirectory)/digits/test.npz}
        finetune:
          mode: full
          steps: 1000
          batch_size: 128
          optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.1}
          schedule: {warmup_steps: 100, decay: cosine}
          grad_clip: 1.0
          orthoreg: {lambda: \(orthoRegLambda), form: frobenius}
        head: {steps: 300, batch_size: 256, optimizer: {name: adamw, lr: 1.0e-2, weight_decay: 0.0}}
        merge:
          methods: [task_arithmetic]
          alpha: {from: 0.0, to: 1.0, count: 21}
        output: \(output)

        """
    }
}
