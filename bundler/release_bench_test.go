package bundler_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
)

// BenchmarkReleaseConfigOnly measures a release that changes one template
// line and keeps the image, for two image sizes: the image is already in
// the repository, so the time and the bytes pushed should not grow with it.
func BenchmarkReleaseConfigOnly(b *testing.B) {
	for _, mib := range []int64{1, 64} {
		b.Run(fmt.Sprintf("image=%dMiB", mib), func(b *testing.B) {
			e := bundlertest.NewEnv(b)
			size := mib << 20
			img, _ := bundlertest.WriteImage(b, filepath.Join(e.Dir, "img.tar"), imagetest.File{
				Path: "app/blob.bin", Size: size, Content: func() io.Reader { return imagetest.Random(7, size) }})
			fleet := bundlertest.WriteFleet(b, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{
				Image: "pullship-test/app:1", Template: "line = 0\n", Target: "/etc/app/app.conf",
				Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}},
			})
			e.Cut(b, fleet, img)
			tmpl := filepath.Join(filepath.Dir(fleet), "conf.tmpl")
			var pushed int64
			i := 0
			for b.Loop() {
				i++
				if err := os.WriteFile(tmpl, fmt.Appendf(nil, "line = %d\n", i), 0o644); err != nil {
					b.Fatal(err)
				}
				pushed += e.Cut(b, fleet, img).PackBytes
			}
			b.ReportMetric(float64(pushed)/float64(i), "pushedB/op")
		})
	}
}
