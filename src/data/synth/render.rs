//! Procedural chest radiographs. Each image draws a chest-like anatomy (body, lung fields, heart and mediastinum,
//! diaphragm, ribs, clavicles, vascular markings) with patient-to-patient variation in size, position and exposure,
//! then one signature per present finding whose strength follows its severity. Bright = dense (bone, fluid, soft
//! tissue), dark = air, as on a real film.

use rand::Rng;

use crate::data::View;
use crate::data::synth::world::{Findings, Side};
use crate::observations::Observation::{self, *};

/// A float canvas in [0, 1] coordinates; pixel values are accumulated densities.
struct Canvas {
    n: usize,
    px: Vec<f32>,
}

impl Canvas {
    fn new(n: usize, base: f32) -> Canvas {
        Canvas {
            n,
            px: vec![base; n * n],
        }
    }

    /// Pixel index range covering [lo, hi] in normalised coordinates, clamped to the image.
    fn range(&self, lo: f32, hi: f32) -> std::ops::Range<usize> {
        let n = self.n as f32;
        let a = ((lo * n).floor().max(0.0)) as usize;
        let b = ((hi * n).ceil().min(n)) as usize;
        a.min(self.n)..b.max(a.min(self.n))
    }

    /// Visits every pixel centre in the box, with its normalised coordinates.
    fn each(&mut self, x0: f32, x1: f32, y0: f32, y1: f32, mut f: impl FnMut(f32, f32, &mut f32)) {
        let inv = 1.0 / self.n as f32;
        let (xs, ys) = (self.range(x0, x1), self.range(y0, y1));
        for j in ys {
            let y = (j as f32 + 0.5) * inv;
            let row = &mut self.px[j * self.n..(j + 1) * self.n];
            for i in xs.clone() {
                f((i as f32 + 0.5) * inv, y, &mut row[i]);
            }
        }
    }

    /// Soft-edged ellipse adding `amp` inside.
    fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, amp: f32, soft: f32) {
        let m = 1.0 + soft;
        self.each(
            cx - rx * m,
            cx + rx * m,
            cy - ry * m,
            cy + ry * m,
            |x, y, p| {
                let d = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
                *p += amp * smooth_inside(d, soft);
            },
        );
    }

    /// Gaussian blob.
    fn blob(&mut self, cx: f32, cy: f32, sx: f32, sy: f32, amp: f32) {
        self.each(
            cx - 3.0 * sx,
            cx + 3.0 * sx,
            cy - 3.0 * sy,
            cy + 3.0 * sy,
            |x, y, p| {
                let d = ((x - cx) / sx).powi(2) + ((y - cy) / sy).powi(2);
                *p += amp * (-0.5 * d).exp();
            },
        );
    }

    /// Anti-aliased line segment of half-width `w`.
    fn segment(&mut self, (ax, ay): (f32, f32), (bx, by): (f32, f32), w: f32, amp: f32) {
        let px_w = w.max(0.6 / self.n as f32);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-12);
        self.each(
            ax.min(bx) - 2.0 * px_w,
            ax.max(bx) + 2.0 * px_w,
            ay.min(by) - 2.0 * px_w,
            ay.max(by) + 2.0 * px_w,
            |x, y, p| {
                let t = (((x - ax) * dx + (y - ay) * dy) / len2).clamp(0.0, 1.0);
                let d = ((x - ax - t * dx).powi(2) + (y - ay - t * dy).powi(2)).sqrt();
                *p += amp * (1.0 - d / (2.0 * px_w)).clamp(0.0, 1.0);
            },
        );
    }

    /// Polyline through `pts`.
    fn polyline(&mut self, pts: &[(f32, f32)], w: f32, amp: f32) {
        for s in pts.windows(2) {
            self.segment(s[0], s[1], w, amp);
        }
    }
}

/// 1 well inside (d < 1 − soft), 0 outside (d > 1 + soft), smooth between.
fn smooth_inside(d: f32, soft: f32) -> f32 {
    let t = ((1.0 + soft - d) / (2.0 * soft).max(1e-6)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A lung field (ellipse) on the image.
#[derive(Clone, Copy)]
struct Lung {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    /// +1 when the lateral wall is toward larger x.
    outward: f32,
}

impl Lung {
    fn inside(&self, x: f32, y: f32) -> f32 {
        (((x - self.cx) / self.rx).powi(2) + ((y - self.cy) / self.ry).powi(2)).sqrt()
    }
    /// A random point in the lung (away from the edge).
    fn point(&self, rng: &mut impl Rng, lower_bias: f32) -> (f32, f32) {
        let a = rng.random_range(0.0..std::f32::consts::TAU);
        let r = rng.random::<f32>().sqrt() * 0.7;
        let y = self.cy
            + r * a.sin().abs().max(lower_bias)
                * self.ry
                * if rng.random_bool(0.7) { 1.0 } else { -1.0 };
        (self.cx + r * a.cos() * self.rx, y)
    }
}

/// Renders one image of the study. `rng` must be dedicated to this image (it fixes the patient's pose, exposure
/// and noise), so the same seed always gives the same pixels.
pub fn render(f: &Findings, view: View, size: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut c = Canvas::new(size, 0.05);
    // Patient variation: position, body habitus, exposure.
    let sx = rng.random_range(-0.03..0.03f32);
    let sy = rng.random_range(-0.03..0.03f32);
    let scale = rng.random_range(0.92..1.06f32);
    let gain = rng.random_range(0.85..1.15f32);
    let offset = rng.random_range(-0.05..0.05f32);
    let noise = rng.random_range(0.015..0.04f32);
    let ap = matches!(view, View::Ap);

    if view == View::Lateral {
        lateral(&mut c, f, (sx, sy, scale), rng);
    } else {
        frontal(&mut c, f, (sx, sy, scale), ap, rng);
    }

    let mut out = Vec::with_capacity(size * size);
    for v in &c.px {
        let n: f32 = gaussian(rng) * noise;
        out.push(((v * gain + offset + n).clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    out
}

/// A standard normal draw (Box–Muller; one value per call keeps the stream simple and deterministic).
fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-7);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn sev(f: &Findings, o: Observation) -> Option<f32> {
    f.has(o).then(|| f.severity(o))
}

/// The lungs a lateralised finding is on (patient right = image left).
fn lungs_for(f: &Findings, o: Observation, lungs: &[Lung; 2]) -> Vec<Lung> {
    match f.side[o.index()] {
        Side::Right => vec![lungs[0]],
        Side::Left => vec![lungs[1]],
        Side::Both => lungs.to_vec(),
    }
}

fn frontal(
    c: &mut Canvas,
    f: &Findings,
    (sx, sy, k): (f32, f32, f32),
    ap: bool,
    rng: &mut impl Rng,
) {
    let at = |x: f32, y: f32| (0.5 + (x - 0.5) * k + sx, 0.5 + (y - 0.5) * k + sy);
    // Body and shoulders.
    let (bx, by) = at(0.5, 0.56);
    c.ellipse(bx, by, 0.47 * k, 0.55 * k, 0.38, 0.08);
    // Lungs: air is dark. Atelectasis raises its hemidiaphragm (shorter lung).
    let mut lungs = [
        Lung {
            cx: 0.0,
            cy: 0.0,
            rx: 0.155 * k,
            ry: 0.3 * k,
            outward: -1.0,
        },
        Lung {
            cx: 0.0,
            cy: 0.0,
            rx: 0.15 * k,
            ry: 0.29 * k,
            outward: 1.0,
        },
    ];
    for (l, x) in lungs.iter_mut().zip([0.32, 0.68]) {
        (l.cx, l.cy) = at(x, 0.45);
    }
    if let Some(s) = sev(f, Atelectasis) {
        for l in lungs_for(f, Atelectasis, &lungs) {
            let i = if l.outward < 0.0 { 0 } else { 1 };
            lungs[i].ry *= 1.0 - 0.12 * s;
            lungs[i].cy -= 0.12 * s * lungs[i].ry * 0.5;
        }
    }
    for l in &lungs {
        c.ellipse(l.cx, l.cy, l.rx, l.ry, -0.32, 0.06);
    }
    // Vascular markings: faint branching texture from the hila, absent where a pneumothorax collapsed the lung.
    let ptx = sev(f, Pneumothorax).map(|s| (s, lungs_for(f, Pneumothorax, &lungs)));
    for l in &lungs {
        let hx = l.cx - l.outward * 0.5 * l.rx;
        for _ in 0..7 {
            let a = rng.random_range(-1.3..1.3f32);
            let len = rng.random_range(0.5..0.9f32);
            let end = (
                hx + l.outward * a.cos() * l.rx * 1.2 * len,
                l.cy + a.sin() * l.ry * len,
            );
            let end = clip_ptx(end, l, ptx.as_ref());
            c.segment((hx, l.cy), end, 0.004, 0.05);
        }
    }
    // Ribs: curved bright bands across each lung, posterior ribs sloping down laterally.
    let fracture =
        sev(f, Fracture).map(|s| (s, f.side[Fracture.index()], rng.random_range(2..7usize)));
    for (li, l) in lungs.iter().enumerate() {
        for r in 0..9 {
            let y0 = l.cy - l.ry * 0.95 + r as f32 * l.ry * 0.22;
            let broken = fracture.filter(|&(_, side, rib)| {
                rib == r
                    && matches!(
                        (side, li),
                        (Side::Right, 0) | (Side::Left, 1) | (Side::Both, _)
                    )
            });
            rib(c, l, y0, broken.map(|(s, _, _)| s));
        }
    }
    // Clavicles.
    let (lx, ly) = at(0.2, 0.16);
    let (mx, my) = at(0.47, 0.2);
    c.segment((lx, ly), (mx, my), 0.012, 0.2);
    let (rx, ry) = at(0.8, 0.16);
    let (nx, ny) = at(0.53, 0.2);
    c.segment((rx, ry), (nx, ny), 0.012, 0.2);

    // Mediastinum and heart (AP films magnify the heart a little).
    let med_w = 0.055 + sev(f, EnlargedCardiomediastinum).map_or(0.0, |s| 0.02 + 0.06 * s);
    let (mcx, mcy) = at(0.5, 0.33);
    c.ellipse(mcx, mcy, med_w * k, 0.2 * k, 0.3, 0.15);
    let heart_rx = (0.145
        + if ap { 0.01 } else { 0.0 }
        + sev(f, Cardiomegaly).map_or(0.0, |s| 0.025 + 0.075 * s))
        * k;
    let (hcx, hcy) = at(0.55, 0.6);
    c.ellipse(hcx, hcy, heart_rx, 0.125 * k, 0.34, 0.1);
    // Diaphragm and abdomen below the lungs.
    let (dx, dy) = at(0.5, 0.86);
    c.ellipse(dx, dy, 0.4 * k, 0.12 * k, 0.12, 0.3);

    frontal_findings(c, f, &lungs, ptx.as_ref(), (k, &at), rng);
}

/// The findings drawn over a frontal view's anatomy, in a fixed order (the draws from `rng` follow it).
fn frontal_findings(
    c: &mut Canvas,
    f: &Findings,
    lungs: &[Lung; 2],
    ptx: Option<&(f32, Vec<Lung>)>,
    (k, at): (f32, &impl Fn(f32, f32) -> (f32, f32)),
    rng: &mut impl Rng,
) {
    if let Some(s) = sev(f, PleuralEffusion) {
        for l in lungs_for(f, PleuralEffusion, lungs) {
            let level = l.cy + l.ry * (0.85 - 1.0 * s);
            let amp = 0.22 + 0.18 * s;
            c.each(
                l.cx - l.rx,
                l.cx + l.rx,
                level - 0.1,
                l.cy + l.ry,
                |x, y, p| {
                    // Meniscus: the fluid climbs the lateral wall.
                    let lat = ((x - l.cx) * l.outward / l.rx).clamp(-1.0, 1.0);
                    let top = level - 0.06 * s.max(0.3) * (lat + 1.0);
                    if y > top {
                        *p += amp
                            * ((y - top) * 40.0).clamp(0.0, 1.0)
                            * smooth_inside(l.inside(x, y), 0.06);
                    }
                },
            );
        }
    }
    if let Some((s, ls)) = ptx {
        for l in ls {
            // Apical-lateral crescent of air without markings, edged by the visceral pleural line.
            let w = 0.12 + 0.5 * s;
            let (ox, oy) = (l.cx + l.outward * l.rx * 0.35, l.cy - l.ry * 0.35);
            c.each(
                l.cx - l.rx,
                l.cx + l.rx,
                l.cy - l.ry,
                l.cy + l.ry * 0.4,
                |x, y, p| {
                    let d = l.inside(x, y);
                    let toward = ((x - ox) * l.outward / l.rx - (y - oy) / l.ry).max(0.0);
                    if d < 1.0 && toward > 1.0 - w {
                        *p -= 0.08 + 0.1 * s;
                    } else if d < 1.0 && (toward - (1.0 - w)).abs() < 0.04 {
                        *p += 0.1 + 0.08 * s;
                    }
                },
            );
        }
    }
    if let Some(s) = sev(f, Edema) {
        // Bilateral perihilar haze, plus Kerley lines when marked.
        for l in lungs {
            let hx = l.cx - l.outward * 0.4 * l.rx;
            c.blob(
                hx,
                l.cy + 0.02,
                (0.06 + 0.06 * s) * k,
                (0.08 + 0.08 * s) * k,
                0.07 + 0.2 * s,
            );
            if s > 0.5 {
                for i in 0..3 {
                    let y = l.cy + l.ry * (0.45 + 0.12 * i as f32);
                    let x = l.cx + l.outward * l.rx * 0.8;
                    c.segment((x, y), (x - l.outward * 0.04, y), 0.004, 0.12);
                }
            }
        }
    }
    if let Some(s) = sev(f, Consolidation) {
        for l in lungs_for(f, Consolidation, lungs) {
            let (x, y) = l.point(rng, 0.3);
            let r = (0.04 + 0.06 * s) * k;
            c.ellipse(x, y, r * 1.2, r, 0.15 + 0.25 * s, 0.35);
            // Air bronchograms.
            c.segment(
                (x - r * 0.6, y - r * 0.2),
                (x + r * 0.5, y + r * 0.3),
                0.004,
                -0.1 * s,
            );
        }
    }
    if let Some(s) = sev(f, Pneumonia) {
        for l in lungs_for(f, Pneumonia, lungs) {
            let (x, y) = l.point(rng, 0.2);
            for _ in 0..4 {
                let (dx, dy) = (
                    rng.random_range(-0.05..0.05f32),
                    rng.random_range(-0.05..0.05f32),
                );
                c.blob(x + dx, y + dy, 0.025 * k, 0.025 * k, 0.06 + 0.16 * s);
            }
        }
    }
    if let Some(s) = sev(f, Atelectasis) {
        for l in lungs_for(f, Atelectasis, lungs) {
            let y = l.cy + l.ry * rng.random_range(0.45..0.7f32);
            let tilt = rng.random_range(-0.03..0.03f32);
            c.segment(
                (l.cx - l.rx * 0.6, y - tilt),
                (l.cx + l.rx * 0.6, y + tilt),
                0.006 + 0.012 * s,
                0.15 + 0.2 * s,
            );
        }
    }
    if let Some(s) = sev(f, LungLesion) {
        for l in lungs_for(f, LungLesion, lungs) {
            let (x, y) = l.point(rng, 0.0);
            let r = (0.012 + 0.045 * s) * k;
            c.ellipse(x, y, r, r, 0.2 + 0.2 * s, 0.15);
        }
    }
    if f.has(LungOpacity) && !super::world::OPACITY_CHILDREN.iter().any(|o| f.has(*o)) {
        let s = f.severity(LungOpacity);
        for l in lungs_for(f, LungOpacity, lungs) {
            let (x, y) = l.point(rng, 0.0);
            c.blob(
                x,
                y,
                (0.05 + 0.04 * s) * k,
                (0.06 + 0.05 * s) * k,
                0.06 + 0.18 * s,
            );
        }
    }
    if let Some(s) = sev(f, PleuralOther) {
        for l in lungs_for(f, PleuralOther, lungs) {
            // Pleural thickening along the lateral wall and an apical cap.
            let t = 0.01 + 0.03 * s;
            c.each(
                l.cx - l.rx,
                l.cx + l.rx,
                l.cy - l.ry,
                l.cy + l.ry * 0.6,
                |x, y, p| {
                    let d = l.inside(x, y);
                    if d < 1.0
                        && d > 1.0 - t / l.rx * 1.5
                        && ((x - l.cx) * l.outward > 0.0 || y < l.cy - l.ry * 0.6)
                    {
                        *p += 0.18 + 0.12 * s;
                    }
                },
            );
        }
    }
    if let Some(s) = sev(f, SupportDevices) {
        devices(c, s, at, rng);
    }
}

/// Keeps a marking's end out of a pneumothorax crescent by pulling it toward the hilum.
fn clip_ptx(end: (f32, f32), l: &Lung, ptx: Option<&(f32, Vec<Lung>)>) -> (f32, f32) {
    match ptx {
        Some((s, ls)) if ls.iter().any(|p| p.outward == l.outward) => {
            let pull = 0.3 + 0.5 * s;
            (
                end.0 - (end.0 - l.cx) * pull,
                end.1 + (l.cy - end.1) * pull * 0.5,
            )
        }
        _ => end,
    }
}

/// One posterior rib across a lung; a fractured rib has a gap and a step.
fn rib(c: &mut Canvas, l: &Lung, y0: f32, fracture: Option<f32>) {
    let steps = 6;
    let mut pts = Vec::with_capacity(steps + 1);
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        let x = l.cx - l.outward * l.rx * 0.9 + l.outward * t * l.rx * 1.9;
        let y = y0 + 0.07 * t * t;
        pts.push((x, y));
    }
    match fracture {
        None => c.polyline(&pts, 0.007, 0.09),
        Some(s) => {
            let cut = steps / 2 + 1;
            c.polyline(&pts[..cut], 0.007, 0.09);
            let step = 0.008 + 0.02 * s;
            let rest: Vec<(f32, f32)> = pts[cut..]
                .iter()
                .map(|&(x, y)| (x + l.outward * 0.01 * s, y + step))
                .collect();
            c.polyline(&rest, 0.007, 0.09 + 0.06 * s);
        }
    }
}

/// Lines and tubes: more of them as the (device) severity rises.
fn devices(c: &mut Canvas, s: f32, at: &impl Fn(f32, f32) -> (f32, f32), rng: &mut impl Rng) {
    let n = 1 + (s * 2.99) as usize;
    let mut kinds = [0usize, 1, 2, 3];
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.random_range(0..=i));
    }
    for kind in &kinds[..n] {
        match kind {
            // Endotracheal tube in the trachea.
            0 => c.polyline(&[at(0.5, 0.0), at(0.5, 0.26)], 0.006, 0.45),
            // Central venous line from the subclavian to the SVC.
            1 => c.polyline(
                &[at(0.18, 0.14), at(0.35, 0.22), at(0.46, 0.3), at(0.47, 0.4)],
                0.004,
                0.45,
            ),
            // Pacemaker generator with a lead into the heart.
            2 => {
                let (gx, gy) = at(0.74, 0.17);
                c.ellipse(gx, gy, 0.04, 0.03, 0.5, 0.1);
                c.polyline(
                    &[(gx, gy), at(0.6, 0.3), at(0.52, 0.5), at(0.55, 0.65)],
                    0.004,
                    0.45,
                );
            }
            // Nasogastric tube down to the stomach.
            _ => c.polyline(&[at(0.49, 0.0), at(0.51, 0.5), at(0.58, 0.85)], 0.004, 0.4),
        }
    }
}

fn lateral(c: &mut Canvas, f: &Findings, (sx, sy, k): (f32, f32, f32), rng: &mut impl Rng) {
    let at = |x: f32, y: f32| (0.5 + (x - 0.5) * k + sx, 0.5 + (y - 0.5) * k + sy);
    let (bx, by) = at(0.5, 0.55);
    c.ellipse(bx, by, 0.42 * k, 0.55 * k, 0.38, 0.08);
    let (lx, ly) = at(0.52, 0.45);
    let lung = Lung {
        cx: lx,
        cy: ly,
        rx: 0.27 * k,
        ry: 0.31 * k,
        outward: 1.0,
    };
    c.ellipse(lung.cx, lung.cy, lung.rx, lung.ry, -0.3, 0.06);
    // Spine posteriorly, sternum anteriorly.
    let (spx, _) = at(0.8, 0.0);
    c.polyline(
        &[(spx, at(0.0, 0.1).1), (spx + 0.02, at(0.0, 0.9).1)],
        0.03,
        0.25,
    );
    c.polyline(&[at(0.22, 0.2), at(0.2, 0.6)], 0.01, 0.15);
    let heart_r = (0.13 + sev(f, Cardiomegaly).map_or(0.0, |s| 0.02 + 0.06 * s)) * k;
    let (hx, hy) = at(0.36, 0.62);
    c.ellipse(hx, hy, heart_r, 0.13 * k, 0.33, 0.12);
    let (dx, dy) = at(0.5, 0.86);
    c.ellipse(dx, dy, 0.38 * k, 0.1 * k, 0.12, 0.3);
    if let Some(s) = sev(f, PleuralEffusion) {
        // Posterior costophrenic angle fills first.
        let (ex, ey) = at(0.72, 0.76);
        c.blob(
            ex,
            ey,
            (0.05 + 0.06 * s) * k,
            (0.03 + 0.06 * s) * k,
            0.15 + 0.2 * s,
        );
    }
    for o in [Consolidation, Pneumonia, LungLesion, Edema] {
        if let Some(s) = sev(f, o) {
            let (x, y) = lung.point(rng, 0.2);
            c.blob(x, y, 0.04 * k, 0.04 * k, 0.05 + 0.15 * s);
        }
    }
    if let Some(s) = sev(f, SupportDevices) {
        c.polyline(&[at(0.45, 0.0), at(0.47, 0.3)], 0.005, 0.3 + 0.1 * s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::N_OBS;
    use rand::SeedableRng;

    fn findings(with: &[(Observation, f32)]) -> Findings {
        let mut f = Findings {
            present: [false; N_OBS],
            severity: [0.0; N_OBS],
            side: [Side::Right; N_OBS],
            icu: false,
            age: 60,
            female: false,
        };
        for &(o, s) in with {
            f.present[o.index()] = true;
            f.severity[o.index()] = s;
        }
        f
    }

    fn mean_heart_band(img: &[u8], n: usize) -> f32 {
        // Mean brightness of the lateral heart borders (band where a normal heart ends and a big one does not).
        let mut sum = 0.0;
        let mut cnt = 0.0;
        for j in (n * 55 / 100)..(n * 70 / 100) {
            for i in (n * 30 / 100)..(n * 38 / 100) {
                sum += img[j * n + i] as f32;
                cnt += 1.0;
            }
        }
        sum / cnt
    }

    #[test]
    fn same_rng_same_pixels_and_signatures_follow_severity() {
        let n = 64;
        let normal = findings(&[]);
        let a = render(
            &normal,
            View::Pa,
            n,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
        );
        let b = render(
            &normal,
            View::Pa,
            n,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(3),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), n * n);
        let mut normal_sum = 0.0;
        let mut big_sum = 0.0;
        for seed in 0..40 {
            let img = render(
                &normal,
                View::Pa,
                n,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            );
            normal_sum += mean_heart_band(&img, n);
            let big = findings(&[(Cardiomegaly, 0.9)]);
            let img = render(
                &big,
                View::Pa,
                n,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            );
            big_sum += mean_heart_band(&img, n);
        }
        assert!(big_sum > normal_sum * 1.1, "{big_sum} vs {normal_sum}");
    }
}
