//go:build cgo && linux

package cuda

import "github.com/leo-operator/leo/runtime/model"

// HostConverted is, for tests, w as Upload hands it to the GPU: each group
// of matrices converted on the host to its device type (deviceType).
func HostConverted(w model.Weights) (model.Weights, error) {
	out := w
	out.Layers = append([]model.Layer(nil), w.Layers...)
	for _, g := range (&Backend{}).groups(&w) {
		t := deviceType(g.ws)
		for i, m := range g.ws {
			if m.Type == t {
				continue
			}
			data, err := convert(nil, m, t)
			if err != nil {
				return model.Weights{}, err
			}
			c := *m
			c.Type, c.Data, c.Prepared = t, data, nil
			*target(&out, g.layer, g.which[i]) = c
		}
	}
	return out, nil
}

func target(w *model.Weights, layer, which int) *model.Weight {
	if layer < 0 {
		return &w.Output
	}
	L := &w.Layers[layer]
	return [...]*model.Weight{&L.Q, &L.K, &L.V, &L.O, &L.Gate, &L.Up, &L.Down}[which]
}
